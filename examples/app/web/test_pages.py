import unittest

from pages import money, render_order


class MoneyTest(unittest.TestCase):
    def test_cents_keep_two_digits(self):
        self.assertEqual([money(5), money(1234), money(100)], ["0.05", "12.34", "1.00"])


class RenderOrderTest(unittest.TestCase):
    def test_the_page_lists_each_line_and_the_total(self):
        page = render_order(7, [("Tea", 2, 350), ("Mug", 1, 900)])
        self.assertEqual(
            page,
            "<h1>Order 7</h1><table><tr><td>Tea</td><td>2</td><td>7.00</td></tr>"
            "<tr><td>Mug</td><td>1</td><td>9.00</td></tr>"
            "<tr><th colspan=2>Total</th><th>16.00</th></tr></table>",
        )

    def test_names_are_escaped(self):
        page = render_order(1, [("<script>alert(1)</script>", 1, 1)])
        self.assertIn("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>", page)
        self.assertNotIn("<script>", page)


if __name__ == "__main__":
    unittest.main()
