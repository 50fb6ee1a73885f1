"""Who sees whose records: Hive's one rule for what belongs to a person (runs,
messages), so every list, detail, page and live feed of them decides alike."""


def user_sees_all(*, user, permission: str) -> bool:
    """Staff and holders of the records' view `permission` (`app.view_model`) see
    everyone's; any other user only their own."""
    return bool(user.is_staff or user.has_perm(permission))
