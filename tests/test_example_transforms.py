"""
Tests for L{twisted_proxy.examples.transforms}, the example body transforms
the README and C{etc/gateway.toml} use.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.examples.transforms import v1_to_v2, v2_to_v1
from twisted_proxy.loading import load_object
from twisted_proxy.testing import request_info


class ExampleTransformTests(SynchronousTestCase):
    """
    L{v1_to_v2} and L{v2_to_v1} convert between the two API versions.
    """

    def test_named_in_config(self) -> None:
        """
        The dotted paths the README gives load the functions.
        """
        self.assertIs(load_object("twisted_proxy.examples.transforms:v1_to_v2"), v1_to_v2)
        self.assertIs(load_object("twisted_proxy.examples.transforms:v2_to_v1"), v2_to_v1)

    def test_v1_to_v2(self) -> None:
        """
        C{name} becomes C{full_name}, other fields stay, C{version} is 2.
        """
        self.assertEqual(
            v1_to_v2({"name": "Ada", "age": 36}, request_info()),
            {"full_name": "Ada", "age": 36, "version": 2},
        )

    def test_v2_to_v1(self) -> None:
        """
        C{full_name} becomes C{name} and C{version} goes.
        """
        self.assertEqual(
            v2_to_v1({"full_name": "Ada", "age": 36, "version": 2}, request_info()),
            {"name": "Ada", "age": 36},
        )

    def test_round_trip(self) -> None:
        """
        Converting to v2 and back gives the v1 object again.
        """
        obj = {"name": "Ada", "tags": ["x"], "nested": {"name": "kept"}}
        self.assertEqual(v2_to_v1(v1_to_v2(obj, None), None), obj)

    def test_lists(self) -> None:
        """
        Each object of a list is converted; other items stay as they are.
        """
        self.assertEqual(
            v1_to_v2([{"name": "a"}, 1, "s"], None),
            [{"full_name": "a", "version": 2}, 1, "s"],
        )
        self.assertEqual(v2_to_v1([{"full_name": "a", "version": 2}], None), [{"name": "a"}])

    def test_scalars(self) -> None:
        """
        A JSON value that is neither an object nor a list is unchanged.
        """
        for value in ["text", 3, None, True]:
            self.assertEqual(v1_to_v2(value, None), value)
            self.assertEqual(v2_to_v1(value, None), value)

    def test_input_not_mutated(self) -> None:
        """
        The functions return new objects and leave their input alone.
        """
        obj = {"name": "Ada"}
        v1_to_v2(obj, None)
        self.assertEqual(obj, {"name": "Ada"})
