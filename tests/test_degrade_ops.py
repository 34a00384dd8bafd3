"""Degradation operators and recipes, on in-memory frames (no Ray, no files)."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from stc.core.config import ConfigError
from stc.core.video import read_frames
from stc.degrade.bfvr import BFVR, BFVRConfig, BFVRParams
from stc.degrade.brightness import BrightnessConfig, BrightnessFlicker
from stc.degrade.pixel_flicker import PixelFlicker, check_model
from stc.degrade.recipe import Recipe, Step, builtin_recipes, load_recipe
from stc.degrade.video import Video, lq_from_bitstream
from stc.degrade.windows import WindowOptions, iter_windows


def frames(n: int = 12, size: int = 64, seed: int = 0) -> np.ndarray:
    """Textured frames with sharp edges that move a little: blur and coding both show."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (size // 4, size // 4, 3), dtype=np.uint8),
                      (size * 2, size * 2), interpolation=cv2.INTER_NEAREST)
    base = cv2.add(base, rng.integers(0, 40, base.shape, dtype=np.uint8))
    return np.stack([np.ascontiguousarray(base[i:i + size, i:i + size]) for i in range(n)])


def lq_bytes(recipe: Recipe, x: np.ndarray, seed: int, clip: str = "c") -> bytes:
    video, _ = recipe.run(x, 25.0, seed, clip, 0)
    return video.bitstream


def test_builtin_recipes_load():
    assert {"bfvr", "bfvr-nonoise", "brightness", "pixel"} <= set(builtin_recipes())
    assert load_recipe("bfvr-nonoise").steps[0].bfvr.noise == (0.0, 0.0)
    assert load_recipe("bfvr").steps[0].bfvr == BFVRConfig()   # the YAML holds the paper defaults


def test_recipe_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nsteps:\n  - bfvr: {sigmaa: [1, 2]}\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*sigmaa"):
        load_recipe(bad)
    bad.write_text("name: mine\nsteps:\n  - bfvr: {crf: [25, 18]}\n")
    with pytest.raises(ConfigError, match="reversed"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="built-in names"):
        load_recipe("no-such-recipe")
    with pytest.raises(ValueError, match="exactly one"):
        Step()


def test_same_seed_same_bytes_other_seed_differs():
    x = frames()
    r = load_recipe("bfvr")
    a, b = lq_bytes(r, x, 7), lq_bytes(r, x, 7)
    assert a == b
    assert lq_bytes(r, x, 8) != a
    assert lq_bytes(r, x, 7, clip="other") != a


def test_params_in_range_and_one_set_per_video():
    cfg = BFVRConfig()
    op = BFVR(cfg)
    seen = []
    for seed in range(60):
        p = op.draw(np.random.default_rng(seed), 512, 512)
        assert cfg.sigma[0] <= p.sigma <= cfg.sigma[1]
        assert cfg.scale[0] <= p.scale <= cfg.scale[1]
        assert cfg.noise[0] <= p.noise <= cfg.noise[1]
        assert cfg.crf[0] <= p.crf <= cfg.crf[1] and isinstance(p.crf, int)
        assert p.lowres_width % 2 == 0 and abs(512 / p.lowres_width - p.scale) < 0.1
        seen.append((p.sigma, p.scale, p.noise))
    s = np.array(seen)
    # Drawn independently: not tied to one random number as in the published loader.
    assert abs(np.corrcoef(s[:, 0], s[:, 1])[0, 1]) < 0.5
    assert abs(np.corrcoef(s[:, 0], s[:, 2])[0, 1]) < 0.5

    # Identical across the frames of a video: the same blur+downscale for every frame ...
    x = frames(8)
    p = op.draw(np.random.default_rng(1), 64, 64)
    whole = BFVR.prefilter(x, p)
    for i in range(len(x)):
        assert np.array_equal(whole[i], BFVR.prefilter(x[i:i + 1], p)[0])
    # ... and noise at the same level but drawn fresh for each frame.
    p = dataclasses.replace(p, noise=5.0)
    flat = np.full((6, 32, 32, 3), 128, np.uint8)
    noisy = BFVR.add_noise(flat, p, np.random.default_rng(0)).astype(float) - 128
    stds = noisy.reshape(6, -1).std(axis=1)
    assert np.allclose(stds, 5.0, rtol=0.15)
    assert not np.array_equal(noisy[0], noisy[1])
    # Every drawn value is recorded once per window, as scalars.
    _, params = load_recipe("bfvr").run(x, 25.0, 0, "c", 0)
    assert params[0]["step"] == "bfvr"
    assert all(np.isscalar(v) for v in params[0].values())
    json.dumps(params)


def fixed(**kw) -> "BFVRParams":  # noqa: F821
    base = dict(sigma=2.0, kernel_size=21, scale=2.0, lowres_width=32, lowres_height=32, noise=0.0,
                crf=20, preset="medium", down_interp="area", up_interp="bicubic")

    return BFVRParams(**{**base, **kw})


def test_higher_crf_smaller_bitstream():
    x = Video.from_frames(frames(12), 25.0)
    sizes = [len(BFVR().apply(x, fixed(crf=c, sigma=0.8), np.random.default_rng(0)).bitstream)
             for c in (18, 25, 35)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_blur_grows_with_sigma():
    x = Video.from_frames(frames(6), 25.0)

    def sharpness(sigma: float) -> float:
        lq = BFVR().apply(x, fixed(sigma=sigma, scale=1.0, lowres_width=64, lowres_height=64,
                                   crf=12), np.random.default_rng(0)).frames
        return float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                              for f in lq]))

    s = [sharpness(v) for v in (1.0, 2.0, 3.5, 5.0)]
    assert all(a > b for a, b in zip(s, s[1:])), s


def test_lq_frames_are_the_decoded_bitstream():
    """What the degradation hands on equals what the stored bytes decode to."""

    x = frames(8)
    video, params = load_recipe("bfvr").run(x, 25.0, 3, "c", 0)
    assert video.frames.shape == x.shape
    again = lq_from_bitstream(video.bitstream, 64, 64, params[0]["up_interp"])
    assert np.array_equal(again, video.frames)


def test_brightness_hits_about_30_percent_and_nothing_else():
    n = 400
    x = np.stack([np.full((8, 8, 3), 100 + (i % 50), np.uint8) for i in range(n)])
    recipe = load_recipe("brightness")
    video, params = recipe.run(x, 25.0, 0, "long", 0)
    p = params[0]
    hit = set(p["frames"])
    assert 0.25 < len(hit) / n < 0.35
    assert len(p["alphas"]) == n
    for i in range(n):
        if i in hit:
            assert 0.5 <= p["alphas"][i] <= 1.5
            assert np.array_equal(video.frames[i], cv2.convertScaleAbs(x[i], alpha=p["alphas"][i]))
        else:
            assert p["alphas"][i] == 1.0
            assert np.array_equal(video.frames[i], x[i])
    changed = {i for i in range(n) if not np.array_equal(video.frames[i], x[i])}
    assert changed <= hit and len(changed) > 0.9 * len(hit)


def test_brightness_config_checks():
    with pytest.raises(ValueError):
        BrightnessConfig(prob=1.5)
    op = BrightnessFlicker(BrightnessConfig(prob=0.0))
    assert op.draw(np.random.default_rng(0), 50).frames == []


def test_composed_recipe_seeds_each_step():
    r = Recipe(name="combo", steps=[Step(brightness=BrightnessConfig(prob=0.5)), Step(bfvr=BFVRConfig())])
    x = frames(10)
    v1, p1 = r.run(x, 25.0, 1, "c", 0)
    v2, p2 = r.run(x, 25.0, 1, "c", 0)
    assert [s["step"] for s in p1] == ["brightness", "bfvr"]
    assert p1 == p2 and v1.bitstream == v2.bitstream
    _, p3 = r.run(x, 25.0, 1, "c", 1)   # another window: other draws
    assert p3 != p1


def test_windows_cut_as_configured(tmp_path):
    from tests.conftest import noise_video

    path = noise_video(tmp_path / "c.mp4", frames=30, size=32)

    every = read_frames(path, 0, None)

    def cut(**kw):
        return [(w, s, f.shape[0]) for w, s, f in iter_windows(path, WindowOptions(**kw))]

    assert cut(window=12) == [(0, 0, 12), (1, 12, 12)]                 # the 6-frame tail is dropped
    assert cut(window=12, stride=6) == [(0, 0, 12), (1, 6, 12), (2, 12, 12), (3, 18, 12)]
    assert cut(window=12, stride=6, max_windows=2) == [(0, 0, 12), (1, 6, 12)]
    assert cut(window=8, stride=10) == [(0, 0, 8), (1, 10, 8), (2, 20, 8)]
    assert cut(window=0) == [(0, 0, 30)]
    assert cut(window=31) == []
    for w, s, f in iter_windows(path, WindowOptions(window=8, stride=10)):
        assert np.array_equal(f, every[s:s + 8])


@pytest.fixture(scope="module")
def tiny_upscaler(tmp_path_factory):
    from tests.tiny_upscaler import make_tiny_upscaler

    return make_tiny_upscaler(tmp_path_factory.mktemp("sd") / "tiny-x4")


def test_pixel_flicker_rerenders_only_chosen_frames(tiny_upscaler, tmp_path):
    """The tiny random pipeline, saved to disk and loaded by from_pretrained through the
    product code path, re-renders the drawn frames and leaves every other frame alone."""
    recipe_file = tmp_path / "pixel-tiny.yaml"
    recipe_file.write_text(
        "name: pixel-tiny\nsteps:\n"
        f"  - pixel_flicker: {{model: {tiny_upscaler}, prob: 0.3, steps: 2, batch_size: 3}}\n")
    recipe = load_recipe(recipe_file)
    assert recipe.uses_diffusion
    x = frames(16, size=64)
    video, params = recipe.run(x, 25.0, 5, "clip", 0, device="cpu")
    p = params[0]
    chosen = set(p["frames"])
    assert p["step"] == "pixel_flicker" and p["steps"] == 2 and len(p["seeds"]) == len(chosen)
    assert 0 < len(chosen) < len(x)
    assert video.frames.shape == x.shape and video.frames.dtype == np.uint8
    for i in range(len(x)):
        assert np.array_equal(video.frames[i], x[i]) == (i not in chosen), i
    # Reproducible, and a frame's result does not depend on the batch it landed in.
    again, _ = load_recipe(recipe_file).run(x, 25.0, 5, "clip", 0, device="cpu")
    assert np.array_equal(again.frames, video.frames)

    first = sorted(chosen)[0]
    alone = PixelFlicker(recipe.steps[0].pixel_flicker, device="cpu").rerender(
        x[[first]], [p["seeds"][0]])
    # Batched float matmuls may round a few pixels differently: a level or two at most.
    diff = np.abs(alone[0].astype(int) - video.frames[first])
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_pixel_flicker_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        check_model(str(tmp_path / "no-model"))
