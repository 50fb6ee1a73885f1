"""Order arithmetic in integer cents: floats would lose cents on large orders."""

from dataclasses import dataclass


class OrderError(ValueError):
    pass


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_cents: int


def parse_order(payload: dict) -> list[Line]:
    """Lines from a JSON order `{"lines": [{"sku", "quantity", "unit_cents"}]}`."""
    lines = payload.get("lines")
    if not isinstance(lines, list) or not lines:
        raise OrderError("lines: an order needs at least one line")
    parsed = []
    for i, line in enumerate(lines):
        quantity, unit = line.get("quantity"), line.get("unit_cents")
        if not isinstance(quantity, int) or quantity < 1:
            raise OrderError(f"lines.{i}.quantity: must be a whole number of at least 1")
        if not isinstance(unit, int) or unit < 0:
            raise OrderError(f"lines.{i}.unit_cents: must be a whole number of cents")
        parsed.append(Line(sku=str(line.get("sku", "")), quantity=quantity, unit_cents=unit))
    return parsed


def order_total(lines: list[Line], *, discount_percent: int = 0) -> int:
    """The total in cents; a discount rounds half up, in the shop's favour."""
    if not 0 <= discount_percent <= 100:
        raise OrderError("discount_percent: must be between 0 and 100")
    gross = sum(line.quantity * line.unit_cents for line in lines)
    discount = (gross * discount_percent + 50) // 100
    return gross - discount
