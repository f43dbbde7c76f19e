"""Model assembly and checkpoints in the official VISTA2D layout."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model_table

from vista2d_core.errors import UserError
from vista2d_core.model import build_model, load_checkpoint, save_checkpoint
from vista2d_core.recipe import recipe_from_dict


def tiny_net(**backbone):
    return build_model(recipe_from_dict({"mode": "infer", "model": tiny_model_table(**backbone)}).model)


def test_official_key_layout_and_output_shape():
    net = tiny_net().eval()
    keys = list(net.state_dict())
    assert all(k.startswith(("model.image_encoder.", "model.mask_decoder.")) for k in keys)
    # the head's parameters sit at the reference's Sequential indices (BatchNorm 0, 3; ConvTranspose 2, 5)
    assert {k.split(".")[2] for k in keys if k.startswith("model.mask_decoder.")} == {"0", "2", "3", "5"}
    with torch.no_grad():
        assert net(torch.rand(2, 3, 200, 120)).shape == (2, 3, 200, 120)


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(1)
    a, b = tiny_net(), tiny_net()
    path = save_checkpoint(a, tmp_path / "model.pt", epoch=3, best_metric=0.5)
    extra = load_checkpoint(b, path)
    assert extra == {"epoch": 3, "best_metric": 0.5}
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_ddp_and_compile_prefixes_are_accepted(tmp_path):
    torch.manual_seed(3)
    source, target = tiny_net(), tiny_net()
    state = {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "m.pt")
    load_checkpoint(target, tmp_path / "m.pt")
    loaded = target.state_dict()
    assert all(torch.equal(tensor, loaded[key]) for key, tensor in source.state_dict().items())


def test_mismatched_checkpoint_lists_keys(tmp_path):
    state = tiny_net().state_dict()
    state.pop("model.mask_decoder.5.bias")
    state["model.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"missing keys model\.mask_decoder\.5\.bias; unexpected keys model\.extra\.weight"):
        load_checkpoint(tiny_net(), tmp_path / "bad.pt")


def test_broken_checkpoint_file(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="x.pt: cannot load checkpoint"):
        load_checkpoint(tiny_net(), tmp_path / "x.pt")


def test_sam_weights_load_from_original_layout(tmp_path):
    torch.manual_seed(2)
    source = tiny_net().model.image_encoder
    sam_state = {f"image_encoder.{k}": v for k, v in source.state_dict().items()}
    sam_state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.zeros(2, 128)
    torch.save(sam_state, tmp_path / "sam.pth")
    loaded = tiny_net(weights=str(tmp_path / "sam.pth")).model.image_encoder
    assert all(torch.equal(x, y) for x, y in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_sam_weights_of_another_variant_are_refused(tmp_path):
    state = {f"image_encoder.{k}": v for k, v in tiny_net(patch_size=16).model.image_encoder.state_dict().items()}
    torch.save(state, tmp_path / "sam.pth")
    with pytest.raises(UserError, match="wrong shape .*rel_pos"):
        tiny_net(weights=str(tmp_path / "sam.pth"))


def test_native_resolution_interpolates_positional_embeddings():
    """At native resolution a 128 px input makes a 16x16 token grid, and vit_t's positional embeddings are
    for 32x32: the first block must see the patch embedding plus the embeddings resized bicubically."""
    torch.manual_seed(4)
    net = tiny_net(resize_to=0).eval()
    encoder = net.model.image_encoder
    with torch.no_grad():
        encoder.pos_embed.normal_()  # SAM initialises them to zeros, which no test could tell from none
    seen: list[torch.Tensor] = []
    hook = encoder.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert net(x).shape == (1, 3, 128, 128)
        tokens = encoder.patch_embed(x)
    hook.remove()
    assert tokens.shape[1:3] == (16, 16) and encoder.pos_embed.shape[1:3] == (32, 32)
    grid = encoder.pos_embed.detach().permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 16), mode="bicubic").permute(0, 2, 3, 1)
    torch.testing.assert_close(seen[0] - tokens, expected, rtol=1e-4, atol=1e-5)


def test_freeze_stops_encoder_gradients():
    net = tiny_net(freeze=True)
    assert not any(p.requires_grad for p in net.model.image_encoder.parameters())
    assert all(p.requires_grad for p in net.model.mask_decoder.parameters())


def test_conv_stem_replaces_the_patch_embedding(tmp_path):
    net = tiny_net(resize_to=0, stem="conv").eval()
    encoder = net.model.image_encoder
    assert not any(name.startswith("patch_embed.proj") for name in encoder.state_dict())
    tokens = encoder.patch_embed(torch.rand(2, 3, 64, 96))
    assert tokens.shape == (2, 64 // encoder.stride, 96 // encoder.stride, encoder.pos_embed.shape[-1])
    with torch.no_grad():
        assert net(torch.rand(1, 3, 128, 128)).shape == (1, 3, 128, 128)
    torch.save({}, tmp_path / "sam.pth")
    with pytest.raises(UserError, match="stem = 'conv' has no SAM weights"):
        tiny_net(stem="conv", weights=str(tmp_path / "sam.pth"))
    with pytest.raises(UserError, match="power-of-two patch_size"):
        tiny_net(stem="conv", patch_size=6)


def test_mlp_ratio_and_neck_channels_shape_the_encoder_and_the_head(tmp_path):
    net = tiny_net(resize_to=0, stem="conv", mlp_ratio=2.0, neck_channels=128).eval()
    encoder, head = net.model.image_encoder, net.model.mask_decoder
    assert encoder.blocks[0].mlp.lin1.out_features == 2 * encoder.blocks[0].mlp.lin1.in_features
    assert encoder.out_channels == 128 and encoder.neck[-2].out_channels == 128 and head[0].num_features == 128
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 96)).shape == (1, 3, 64, 96)
    # a checkpoint carries the options: a Segmenter rebuilds the same network from it alone
    from vista2d_core.recipe import inference_settings, recipe_to_dict
    from vista2d_core.segmenter import Segmenter

    table = tiny_model_table(resize_to=0, stem="conv", mlp_ratio=2.0, neck_channels=128)
    config = recipe_to_dict(recipe_from_dict({"mode": "infer", "model": table}))
    path = save_checkpoint(net, tmp_path / "model.pt", config=config, inference=inference_settings(config))
    options = Segmenter.from_checkpoint(path, device="cpu").recipe.model.backbone.options
    assert (options.mlp_ratio, options.neck_channels) == (2.0, 128)
    with pytest.raises(UserError, match="mlp_ratio"):
        tiny_net(mlp_ratio=0)


def test_inference_settings_are_the_marked_fields_and_a_checkpoints_section_is_what_is_read(tmp_path):
    from vista2d_core.recipe import inference_settings, recipe_to_dict, settings_from_checkpoint

    recipe = recipe_from_dict({"mode": "infer", "model": tiny_model_table(), "data": {"channels": [1]},
                               "infer": {"roi_size": [64, 64], "tta": True, "inputs": ["x.tif"]}})
    config = recipe_to_dict(recipe)
    config["model"]["backbone"]["weights"] = "/elsewhere/sam.pth"
    settings = inference_settings(config)
    assert set(settings) == {"model", "data", "infer"}
    assert set(settings["model"]) == {"backbone", "head"} and "weights" not in settings["model"]["backbone"]
    assert settings["data"] == {"channels": [1], "percentiles": [1.0, 99.0], "normalize": "vista2d"}
    assert set(settings["infer"]) == {"roi_size", "overlap", "sw_batch_size", "blend", "tta", "auto_diameter",
                                      "runtime", "postprocessor"}
    assert settings["infer"]["roi_size"] == [64, 64] and settings["infer"]["tta"] is True
    net = build_model(recipe.model)
    # an earlier version's checkpoint: taken from its config
    assert settings_from_checkpoint(save_checkpoint(net, tmp_path / "old.pt", config=config)) == settings
    # the section wins over the config
    section = {**settings, "infer": {**settings["infer"], "roi_size": [32, 32]}}
    path = save_checkpoint(net, tmp_path / "new.pt", config=config, inference=section)
    assert settings_from_checkpoint(path)["infer"]["roi_size"] == [32, 32]
    assert settings_from_checkpoint(save_checkpoint(net, tmp_path / "official.pt")) == {}


def test_the_step_time_benchmark_times_each_variant(tmp_path, capsys):
    """benchmarks/step_time.py (the step table of docs/training.md) on tiny batches."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"
    spec = importlib.util.spec_from_file_location("step_time_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = ["--set", "train.batch_size=1", "--set", "train.augment.roi_size=[32,32]", "--steps", "1", "--threads", "1"]
    assert module.main([*tiny, "--json", str(tmp_path / "r.json")]) == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    parameters = [rows[name]["parameters"] for name in
                  ("vit_t (MLP 4x, neck 256)", "MLP 4x, neck 128", "MLP 2x, neck 256", "as the recipe")]
    assert parameters[0] > max(parameters[1:3]) and min(parameters[1:3]) > parameters[3]  # narrower: fewer
    assert 3.8e6 < parameters[0] < 4.0e6 and 2.3e6 < parameters[3] < 2.5e6  # 3.9 M and 2.4 M, as the docs say
    assert all(r["step_s"] > 0 for r in rows.values())
    assert module.parse_variant("a: x=1; y=[2,3]") == ("a", ["x=1", "y=[2,3]"])
    assert "per step" in capsys.readouterr().out
