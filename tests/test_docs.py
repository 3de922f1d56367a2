"""The generated documentation pages match their sources, and the check notices when they do not."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli

from cl_bench.docs import varying_settings, write_pages

ROOT = Path(__file__).resolve().parents[1]


def test_committed_generated_pages_are_what_the_code_and_the_boards_give_today():
    assert write_pages(ROOT / "docs", ROOT / "leaderboards", check=True, readme=ROOT / "README.md") == []
    assert "<!-- registered:start -->" in (ROOT / "README.md").read_text()


def test_check_names_an_edited_page_and_a_missing_one_and_docs_rewrites_them(tmp_path, capsys):
    docs, boards = tmp_path / "docs", tmp_path / "leaderboards"
    boards.mkdir()
    (boards / "cl_toy.csv").write_text(
        "scenario,setting,strategy,model,config_id,n_seeds,acc_mean,strategy_config\n"
        'toy,domain-incremental,gpm_sparse,mlp,a,1,0.5000,"{""k_ratio"":[0.1],""rho"":1.0}"\n'
        'toy,domain-incremental,gpm_sparse,mlp,b,1,0.6000,"{""k_ratio"":[0.2],""rho"":1.0}"\n'
    )
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- registered:start -->\nold\n<!-- registered:end -->\ntail\n")
    code, out, _ = run_cli(
        ["docs", "--docs", str(docs), "--leaderboards", str(boards), "--readme", str(readme)], capsys
    )
    assert code == 0 and "5 page(s) written" in out  # README, catalog, record, results index, one board
    assert "old" not in readme.read_text() and "`gpm_sparse`" in readme.read_text() and "tail" in readme.read_text()
    page = (docs / "results" / "cl_toy.md").read_text()
    assert "| gpm_sparse | k_ratio=[0.2] | 1 | 0.6000 |" in page  # only the field that differs is shown
    assert (
        run_cli(
            ["docs", "--docs", str(docs), "--leaderboards", str(boards), "--readme", str(readme), "--check"], capsys
        )[0]
        == 0
    )
    (docs / "results" / "cl_toy.md").write_text(page.replace("0.6000", "0.9000"))  # a hand edit
    (docs / "catalog.md").unlink()
    code, _, err = run_cli(
        ["docs", "--docs", str(docs), "--leaderboards", str(boards), "--readme", str(readme), "--check"], capsys
    )
    assert code == 1 and "catalog.md" in err and "results/cl_toy.md" in err
    (boards / "cl_toy.csv").unlink()  # a board that is gone takes its generated page with it
    run_cli(["docs", "--docs", str(docs), "--leaderboards", str(boards), "--readme", str(readme)], capsys)
    assert not (docs / "results" / "cl_toy.md").exists() and (docs / "catalog.md").exists()


def test_varying_settings_compares_rows_of_the_same_component_only():
    rows = [
        {"scenario": "s", "strategy": "a", "strategy_config": '{"k": 1, "x": 0}'},
        {"scenario": "s", "strategy": "a", "strategy_config": '{"k": 2, "x": 0}'},
        {"scenario": "s", "strategy": "b", "strategy_config": '{"y": 5}'},
    ]
    assert varying_settings(rows, "strategy_config") == ["k=1", "k=2", ""]


def test_docs_refuses_a_missing_leaderboards_directory(tmp_path, capsys):
    code, _, err = run_cli(
        [
            "docs",
            "--docs",
            str(tmp_path),
            "--leaderboards",
            str(tmp_path / "absent"),
            "--readme",
            str(tmp_path / "README.md"),
        ],
        capsys,
    )
    assert code == 2 and "does not exist" in err and not list(tmp_path.iterdir())


def test_nothing_in_the_repository_points_outside_it():
    folders = (
        "docs",
        "cl_bench",
        "scenarios",
        "strategies",
        "attacks",
        "evaluators",
        "sweeps",
        "benchmarks",
        "analysis",
        "leaderboards",
        "tests",
    )
    files = [
        ROOT / "README.md",
        *(
            path
            for folder in folders
            for path in sorted((ROOT / folder).rglob("*"))
            if path.suffix in (".md", ".py", ".yaml", ".txt", ".csv")
        ),
    ]
    for path in files:
        if path.name == "test_docs.py":
            continue
        text = path.read_text()
        assert "../shared" not in text and "shared/specs" not in text and "specs/" not in text, path
