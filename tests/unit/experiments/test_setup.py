"""spinnray.experiments.setup: every scenario composes and resolves to typed sections; what resolve refuses."""


from helpers import ROOT, composed


def test_every_scenario_composes_and_validates():
    names = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert "forward" in names
    from spinnray.experiments.setup import resolve
    for name in names:
        cfg = composed(f"scenario={name}")
        run = resolve(cfg)                    # network, data and learning typed by their registries
        assert run.kind
        assert cfg.machine.pes_per_chip == 152
        # only batched e-prop models its lockstep traces in DRAM, and says so in its YAML
        assert cfg.machine.sram_per_pe_bytes == (4 * 1024 * 1024 if name == "eprop_cue" else 128 * 1024), name
