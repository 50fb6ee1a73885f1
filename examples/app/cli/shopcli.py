"""`shopcli total 2x3.50 1x9.00 --discount 10`: price an order on the command line."""

import argparse
import re
import sys

LINE = re.compile(r"^(?P<quantity>[1-9][0-9]*)x(?P<units>[0-9]+)\.(?P<cents>[0-9]{2})$")


def line_cents(text: str) -> int:
    match = LINE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not QUANTITYxPRICE, e.g. 2x3.50")
    unit = int(match["units"]) * 100 + int(match["cents"])
    return int(match["quantity"]) * unit


def main(argv: list[str], out=sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="shopcli")
    commands = parser.add_subparsers(dest="command", required=True)
    total = commands.add_parser("total", help="price an order")
    total.add_argument("lines", nargs="+", type=line_cents)
    total.add_argument("--discount", type=int, default=0, choices=range(101), metavar="PERCENT")
    args = parser.parse_args(argv)
    gross = sum(args.lines)
    net = gross - (gross * args.discount + 50) // 100
    print(f"{net // 100}.{net % 100:02d}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
