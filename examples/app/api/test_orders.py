import unittest

from orders import Line, OrderError, order_total, parse_order


class ParseOrderTest(unittest.TestCase):
    def test_lines_are_parsed_in_order(self):
        lines = parse_order(
            {
                "lines": [
                    {"sku": "tea", "quantity": 2, "unit_cents": 350},
                    {"sku": "mug", "quantity": 1, "unit_cents": 900},
                ]
            }
        )
        self.assertEqual(lines, [Line("tea", 2, 350), Line("mug", 1, 900)])

    def test_an_empty_order_is_refused(self):
        with self.assertRaisesRegex(OrderError, "^lines: an order needs at least one line$"):
            parse_order({"lines": []})

    def test_a_zero_quantity_names_the_line(self):
        with self.assertRaisesRegex(OrderError, r"^lines\.1\.quantity: "):
            parse_order(
                {"lines": [{"quantity": 1, "unit_cents": 1}, {"quantity": 0, "unit_cents": 1}]}
            )


class OrderTotalTest(unittest.TestCase):
    def test_the_total_is_exact_in_cents(self):
        self.assertEqual(order_total([Line("tea", 3, 333), Line("mug", 1, 1)]), 1000)

    def test_a_discount_rounds_half_up(self):
        self.assertEqual(order_total([Line("tea", 1, 150)], discount_percent=33), 100)

    def test_a_discount_over_100_percent_is_refused(self):
        with self.assertRaises(OrderError):
            order_total([Line("tea", 1, 150)], discount_percent=101)


if __name__ == "__main__":
    unittest.main()
