"""The order page: server-rendered HTML, every value escaped."""

from html import escape


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def render_order(number: int, lines: list[tuple[str, int, int]]) -> str:
    """An HTML table of (name, quantity, unit cents) rows with a total row."""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{quantity}</td><td>{money(quantity * unit)}</td></tr>"
        for name, quantity, unit in lines
    )
    total = money(sum(quantity * unit for _, quantity, unit in lines))
    return (
        f"<h1>Order {int(number)}</h1><table>{rows}"
        f"<tr><th colspan=2>Total</th><th>{total}</th></tr></table>"
    )
