"""The stack refuses settings it cannot build or that silently switch the method off."""

from __future__ import annotations

import pytest

from omnifm.blocks.stack import OmniFMStack, check_stack_args


def test_heads_that_do_not_divide_the_width_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError) as error:
        OmniFMStack(dim=130, num_heads=4)
    assert str(error.value).startswith("dim=130 must be divisible by num_heads=4")
    assert "a multiple of 4 (e.g. 132)" in str(error.value)
    assert "a divisor of 130 (e.g. 2)" in str(error.value)


def test_top_k_below_one_is_refused_unless_retrieval_is_off() -> None:
    with pytest.raises(ValueError, match=r"top_k=0 retrieves no prototypes.*gskr=false"):
        OmniFMStack(dim=32, top_k=0)
    OmniFMStack(dim=32, top_k=0, gskr=False, num_layers=0)  # an explicit ablation is fine


def test_messages_use_the_callers_names() -> None:
    def name(arg: str) -> str:
        return {"dim": "model.embed_dim"}.get(arg, f"stack.{arg}")

    with pytest.raises(ValueError, match=r"^model\.embed_dim=130 must be divisible by stack"):
        check_stack_args(130, 4, 8, True, name)
    with pytest.raises(ValueError, match=r"^stack\.top_k=-1 .* stack\.gskr=false"):
        check_stack_args(128, 4, -1, True, name)
