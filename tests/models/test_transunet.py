"""T2 (multi-task TransUNet): real tokens reach attention, position embeddings matter,
attention learns, the taps match T1's, and the transformer compiles without graph breaks."""

import numpy as np
import pytest
import torch

from kdcore.data.batches import to_tensors
from kdcore.data.prepare import prepare_data
from kdcore.models import count_parameters, teacher_network
from kdcore.models.transunet import PATCH_STRIDE, TransUNet
from kdcore.settings import absolute_paths, compose_config


def profile_teacher(profile: str, *overrides: str):
    cfg = compose_config([f"profile={profile}", "teacher.arch=t2", *overrides])
    return cfg, teacher_network(cfg)


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_more_than_one_token_reaches_attention_at_every_profile(profile):
    cfg, t2 = profile_teacher(profile)
    assert t2.tokens == (cfg.image_size // PATCH_STRIDE) ** 2 > 1
    if profile == "paper":
        assert t2.tokens == 256  # 16 x 16 at 256 x 256, as TransUNet


def test_t2_at_the_paper_size_has_vit_b_and_r50_shapes():
    _, t2 = profile_teacher("paper")
    assert (t2.hidden, len(t2.blocks), t2.blocks[0].heads) == (768, 12, 12)
    assert [len(s[-1]) if i == 0 else len(s) for i, s in enumerate(t2.stages)] == [3, 4, 9]
    assert 100e6 < count_parameters(t2) < 130e6


def small_t2(image_size=32) -> TransUNet:
    torch.manual_seed(0)
    return TransUNet(2, (1, 1, 1), 32, 2, 4, 64, image_size)


def test_taps_match_t1s_names_and_scales():
    t2 = small_t2().eval()
    taps = t2(torch.rand(2, 3, 32, 32))
    assert set(taps) == {"enc", "bottleneck", "dec", "logits", "recon"}
    assert taps["enc"].shape == (2, t2.tap_channels["enc"], 8, 8)  # 1/4
    assert taps["bottleneck"].shape == (2, 32, 2, 2)  # the transformer's map, 1/16
    assert taps["dec"].shape == (2, t2.tap_channels["dec"], 32, 32)
    assert taps["logits"].shape == (2, 1, 32, 32) and taps["recon"].shape == (2, 3, 32, 32)
    assert "recon" not in t2(torch.rand(2, 3, 32, 32), with_recon=False)


def permutation_gap(t2: TransUNet) -> float:
    """How far the map of permuted tokens, permuted back, is from the plain map."""
    with torch.no_grad():
        tokens, _, _ = t2.encode(torch.rand(1, 3, 64, 64))
        perm = torch.randperm(tokens.shape[1], generator=torch.Generator().manual_seed(1))
        plain = t2.transform(tokens, 4).flatten(2)
        permuted = t2.transform(tokens[:, perm], 4).flatten(2)
        back = torch.empty_like(permuted)
        back[..., perm] = permuted
    return float((back - plain).abs().max())


def test_permuting_tokens_changes_the_map_beyond_the_permutation():
    t2 = small_t2(64).eval()
    assert permutation_gap(t2) > 1e-3  # the position embeddings are used
    with torch.no_grad():
        t2.position.zero_()
    # control: without positions a transformer is permutation-equivariant
    assert permutation_gap(t2) < 1e-5


def non_uniformity(t2: TransUNet, x: torch.Tensor) -> float:
    """1 - (mean attention entropy / log N): 0 for uniform attention over the N tokens."""
    with torch.no_grad():
        tokens, _, _ = t2.encode(x)
        w = t2.blocks[0].attention_weights(tokens + t2.position)
    entropy = -(w * w.clamp_min(1e-12).log()).sum(-1).mean()
    return float(1 - entropy / np.log(w.shape[-1]))


def test_attention_is_not_uniform_after_a_few_steps_on_the_phantom(tmp_path):
    cfg, _ = profile_teacher("smoke", "image_size=64", f"work_dir={tmp_path}")
    data, splits = prepare_data(absolute_paths(cfg), lambda _: None)
    x, y = to_tensors(data, splits.train[:8])
    t2 = small_t2(64)
    opt = torch.optim.AdamW(t2.parameters(), 3e-3)
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(t2(x, False)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert non_uniformity(t2, x) > 0.01
    with torch.no_grad():  # control: queries and keys of zero attend uniformly
        t2.blocks[0].qkv.weight.zero_()
        t2.blocks[0].qkv.bias.zero_()
    assert non_uniformity(t2, x) < 1e-4


def test_the_transformer_blocks_compile_without_graph_breaks():
    t2 = small_t2(64).eval()
    tokens = torch.rand(2, 16, 32)
    explanation = torch._dynamo.explain(t2.blocks[0])(tokens)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(t2.blocks[0])
    assert torch.allclose(compiled(tokens), t2.blocks[0](tokens), atol=1e-5)
    np.testing.assert_equal(explanation.break_reasons, [])
