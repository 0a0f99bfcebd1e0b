"""The suite's warning policy (pyproject.toml ``filterwarnings``): rpcdaemon's own warnings are errors,
a third-party library's warnings are shown, not fatal.

The filters match the module a warning is attributed to, so ``warn_explicit`` with a module name is
exactly what the interpreter does for a warning raised there.
"""

from __future__ import annotations

import warnings

import pytest


@pytest.mark.parametrize("module", ["rpcdaemon", "rpcdaemon.control.state", "test_warning_policy", "conftest"])
def test_a_warning_in_our_own_code_is_an_error(module: str) -> None:
    with pytest.raises(DeprecationWarning, match="ours"):
        warnings.warn_explicit("ours", DeprecationWarning, "x.py", 1, module=module)


def test_a_warning_raised_in_this_test_module_is_an_error() -> None:
    with pytest.raises(UserWarning, match="here"):
        warnings.warn("here", UserWarning, stacklevel=1)


@pytest.mark.parametrize("category", [DeprecationWarning, UserWarning, PendingDeprecationWarning])
def test_a_third_party_import_time_warning_is_shown_not_fatal(category: type[Warning]) -> None:
    # What dnspython triggers in cryptography 51 ("DSA is deprecated"), imported by eventlet.
    # Not pytest.warns: it would catch the warning whatever the filters say. record=True keeps the filters.
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("DSA is deprecated", category, "dsa.py", 13, module="dns.dnssecalgs.dsa")
    assert [(w.category, str(w.message)) for w in seen] == [(category, "DSA is deprecated")]


def test_a_leaked_resource_is_an_error_wherever_it_is_raised() -> None:
    with pytest.raises(ResourceWarning):
        warnings.warn_explicit("unclosed socket", ResourceWarning, "s.py", 1, module="amqp.transport")
