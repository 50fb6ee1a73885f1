import contextlib
import io
import unittest

from shopcli import main


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(argv), out=out)
        except SystemExit as exc:  # argparse exits on bad input
            code = exc.code
    return code, out.getvalue(), err.getvalue()


class TotalTest(unittest.TestCase):
    def test_prices_an_order(self):
        self.assertEqual(run("total", "2x3.50", "1x9.00"), (0, "16.00\n", ""))

    def test_applies_a_discount(self):
        self.assertEqual(run("total", "1x10.00", "--discount", "15"), (0, "8.50\n", ""))

    def test_a_malformed_line_is_refused_with_an_example(self):
        code, out, err = run("total", "2x3.5")
        self.assertEqual((code, out), (2, ""))
        self.assertIn("'2x3.5' is not QUANTITYxPRICE, e.g. 2x3.50", err)


if __name__ == "__main__":
    unittest.main()
