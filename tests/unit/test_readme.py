"""README.md and docs/: the Python examples run as written, the quick start's two commands are the ones CI
runs, every relative link leads to a file, and every option they name exists in conf/."""

import re

from spinnray.experiments.cli import known_keys

from helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_python_examples_run():
    """The Python API example (docs/python.md) and the data-file example (docs/running.md) run as written."""
    ran = []
    for path in DOCS:
        for code in re.findall(r"```python\n(.*?)```", path.read_text(), re.S):
            exec(compile(code, str(path.relative_to(ROOT)), "exec"), {})
            ran.append(path.name)
    assert "python.md" in ran and "running.md" in ran, ran


def test_python_api_example_prints_what_it_says(capsys):
    code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.S)[0]
    exec(compile(code, "docs/python.md", "exec"), {})
    assert "(200, 2, 60)" in capsys.readouterr().out


def test_quick_start_is_the_main_run_and_the_test_command_ci_runs():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
    assert blocks == ['pip install -e . && python run.py', 'pip install -e ".[test]" && python -m pytest -q']
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert 'python -m pip install --quiet --disable-pip-version-check -e ".[test]"' in ci
    assert ci[-1] == blocks[1].split(" && ", 1)[1]


def test_every_relative_link_leads_to_a_file():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"


def test_every_option_the_documents_name_exists_in_conf():
    """`network.hidden`, `data.name=cue`, ...: a key of machine, parallel, network, data, learning, cluster or
    checkpoint named in README.md or docs/ is a key of conf/ (options.md is checked on its own)."""
    keys, _ = known_keys(ROOT / "conf")
    named = 0
    for path in DOCS:
        for span in re.findall(r"`([^`\n]+)`", path.read_text()):
            for word in span.split():
                m = re.fullmatch(r"\+*((?:machine|parallel|network|data|learning|cluster|checkpoint)(?:\.[a-z0-9_]+)+)"
                                 r"(=\S*)?,?", word)
                if m:
                    named += 1
                    assert m.group(1) in keys, f"{path.name} names {m.group(1)}, which no file of conf/ has"
    assert named > 50
