"""The privacy package's public API and its place in the exception tree."""

from __future__ import annotations

import privacy
from secagg.errors import CohortError, ConfigurationError


def test_all_names_exist() -> None:
    for name in privacy.__all__:
        assert hasattr(privacy, name), name
    assert len(set(privacy.__all__)) == len(privacy.__all__)


def test_errors_share_the_one_tree() -> None:
    for exc in (privacy.BudgetExceeded, privacy.InvalidUpdate, privacy.LedgerError,
                privacy.UnsupportedEvent, privacy.ReleaseRepeated, privacy.LedgerVersionError):
        assert issubclass(exc, CohortError)
    assert issubclass(privacy.ReleaseRepeated, privacy.LedgerError)
    assert [t.value for t in privacy.LedgerTrack] == ["site", "example"]
    assert issubclass(ConfigurationError, CohortError)


def test_privacy_parameters_are_keyword_only() -> None:
    import pytest

    with pytest.raises(TypeError):
        privacy.GaussianEvent(1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        privacy.Budget(1.0, 1e-5)  # type: ignore[misc]
    with pytest.raises(TypeError):
        privacy.RoundPrivacy(privacy.Mechanism.NONE, 1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        privacy.plan_encoding(16, 1.0, 2)  # type: ignore[misc]
