"""The parity checker itself: a mismatch, a NaN or an infinity anywhere fails, naming the entry."""

import numpy as np
import pytest

from parity_tests.util import assert_trees_close


def trees():
    return {"a": np.ones(3), "b": np.arange(4.0), "c": np.zeros((2, 2))}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["first", "second"])
def test_non_finite_values_fail_naming_the_entry(bad, where):
    a, b = trees(), trees()
    (a if where == "first" else b)["b"][2] = bad
    with pytest.raises(AssertionError, match=r"b: 1 non-finite value\(s\) in the " + where):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-6, what="check")
    # NaN in both trees at the same place is no agreement either
    a["c"][0, 1] = b["c"][0, 1] = np.nan
    with pytest.raises(AssertionError, match="non-finite"):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-6, what="check")


def test_mismatch_names_the_worst_entry_and_equal_trees_pass():
    a, b = trees(), trees()
    assert_trees_close(a, b, rtol=1e-5, atol=1e-6, what="check")
    b["c"][1, 1] = 1e-3
    b["a"][0] += 1e-4
    with pytest.raises(AssertionError, match="worst entry 'c'"):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-6, what="check")
