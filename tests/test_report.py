"""`cl-bench report`: the pages, their links, hostile record text escaped, bad input refused in one line with
nothing written, atomic replacement, and the site opened in headless Chromium (skipped where it is absent)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli

from cl_bench import report
from cl_bench.cli import main

# every kind of markup a hostile record could try; none of it may reach a page unescaped
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">&amp;\''


def hand_record(run_id: str, strategy: str, seed: int, *, acc: float = 0.6, attacked: bool = False) -> dict:
    """A complete record of a 2-experience run, written by hand (schema of cl_bench.records.RunRecord)."""
    record: dict[str, Any] = {
        "schema_version": 2,
        "run_id": run_id,
        "config_id": f"cfg-{strategy[:3]}-{int(attacked)}",
        "command": f"cl-bench run --strategy {strategy} --seed {seed}",
        "status": "complete",
        "config": {
            "scenario": {"name": "toy", "note": HOSTILE},
            "model": {"name": "mlp"},
            "strategy": {"name": strategy},
            "attack": {"name": "vit_badnets"} if attacked else None,
            "train": {"epochs": 1},
            "seed": seed,
        },
        "scenario": "toy",
        "strategy": strategy,
        "model": "mlp",
        "attack": "vit_badnets" if attacked else None,
        "seed": seed,
        "scenario_info": {"setting": "class-incremental"},
        "accuracy_matrix": [[0.9, 0.1], [0.4, 0.8]],
        "accuracy_initial": [0.5, 0.5],
        "metrics": {"acc": acc, "bwt": -0.5, "forgetting": 0.5, "learning_acc": 0.85},
        "timing": {
            "total_s": 3.0,
            "train_s": 2.0,
            "eval_s": 1.0,
            "per_experience": [{"train_s": 1.0, "eval_s": 0.5}, {"train_s": 1.0, "eval_s": 0.5}],
        },
        "environment": {"python": "3.11", "platform": HOSTILE},
        "created": "2025-01-01T00:00:00+00:00",
    }
    if attacked:
        record.update(
            {
                "accuracy_matrix_clean": [[0.9, 0.1], [0.5, 0.8]],
                "metrics_clean": {"acc": 0.65, "bwt": -0.4, "forgetting": 0.4, "learning_acc": 0.85},
                "attack_info": {
                    "name": "vit_badnets",
                    "target_experience": 1,
                    "budget": {"poison_rate": 0.1},
                    "metrics": {},
                    "wall_time_s": 0.5,
                },
                "attack_effect": {
                    "acc": {"clean": 0.65, "attacked": 0.6, "difference": -0.05},
                    "bwt": {"clean": -0.4, "attacked": -0.5, "difference": -0.1},
                },
                "attack_rows": [{"asr": 0.125}, {"asr": 0.875}],
                "attack_rows_clean": [{"asr": 0.125}, {"asr": 0.0625}],
            }
        )
    return record


def write_run(runs: Path, directory: str, record: dict) -> Path:
    run_dir = runs / directory
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps(record))
    return run_dir


def evaluation_of(record: dict) -> dict:
    return {
        "schema_version": 1,
        "kind": "evaluation",
        "evaluator": "rashomon_dropout",
        "eval_id": "0123456789ab",
        "config": {"name": "rashomon_dropout"},
        "run_id": record["run_id"],
        "seed": record["seed"],
        "metrics": {"ambiguity": 0.25, "undefined_one": None},
        "rows": [{"epsilon": 0.01, HOSTILE: 0.5}],
        "details": {"note": HOSTILE},
        "timing": {"total_s": 1.5},
        "command": f"cl-bench evaluate runs/x --evaluator rashomon_dropout {HOSTILE}",
    }


def tiny_png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (4, 4), (200, 30, 30)).save(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A runs directory (a clean run with its forgetting curve, a hostile one with an evaluation, an attacked one,
    a corrupt record and an incomplete run) and the boards `cl-bench leaderboard` writes from it."""
    root = tmp_path_factory.mktemp("report_inputs")
    runs = root / "runs"
    clean = write_run(runs, "a_clean", hand_record("clean01", "ewc", 1, acc=0.7))
    tiny_png(clean / "forgetting_curve.png")  # a run's own picture is copied, not redrawn
    hostile = hand_record(f"../{HOSTILE}", f"naive{HOSTILE}", 0)
    hostile["command"] = f"cl-bench run {HOSTILE}"
    hostile["accuracy_matrix_validation"] = [[0.8, 0.2], [0.3, 0.7]]
    hostile_dir = write_run(runs, "b_hostile", hostile)
    (hostile_dir / "evaluations").mkdir()
    (hostile_dir / "evaluations" / "rashomon_dropout-0123456789ab.json").write_text(json.dumps(evaluation_of(hostile)))
    attacked = write_run(runs, "c_attacked", hand_record("attacked01", "ewc", 1, acc=0.55, attacked=True))
    tiny_png(attacked / "forgetting_curve.png")
    (runs / "d_broken").mkdir()
    (runs / "d_broken" / "record.json").write_text("{not json")
    (runs / "e_incomplete").mkdir()
    boards = root / "leaderboards"
    with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
        main(["leaderboard", "--runs", str(runs), "--out", str(boards)])
    (boards / "README.md").write_text(
        "# Leaderboards\n\n| file | sweeps | commands |\n|---|---|---|\n"
        "| `attack_vit_badnets.csv` (attacked) | `sweeps/x.yaml` | `cl-bench leaderboard --runs runs --out b` |\n"
        "| `cl_toy.csv` | same | same (and a note) |\n"
    )
    return {"root": root, "runs": runs, "boards": boards}


@pytest.fixture(scope="module")
def site(inputs, tmp_path_factory) -> dict[str, Any]:
    """The report of the inputs: (exit code, stdout, stderr, out dir)."""
    out = tmp_path_factory.mktemp("site") / "report"
    stdout, stderr = StringIO(), StringIO()
    code = 0
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            main(["report", "--runs", str(inputs["runs"]), "--leaderboards", str(inputs["boards"]), "--out", str(out)])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return {"code": code, "out": stdout.getvalue(), "err": stderr.getvalue(), "dir": out}


class LinkParser(HTMLParser):
    """Collects every href and src of a page, and its ids."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.targets.append(value)
            if name == "id" and value is not None:
                self.ids.add(value)


def parse(page: Path) -> LinkParser:
    parser = LinkParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_report_writes_every_page_and_warns_about_the_bad_runs(site, inputs):
    assert site["code"] == 0, site["err"]
    out = site["dir"]
    assert site["out"].strip().splitlines()[-1] == str(out / "index.html")
    # the corrupt record and the incomplete run are named in warnings and left out; the rest is reported
    assert f"{inputs['runs'] / 'd_broken' / 'record.json'} is not valid JSON" in site["err"]
    assert "e_incomplete: no record.json" in site["err"]
    run_pages = sorted((out / "runs").glob("*.html"))
    assert len(run_pages) == 3
    index = (out / "index.html").read_text()
    assert "d_broken" in index and 'id="skipped"' in index
    for board in ("cl_toy", "attack_vit_badnets", "eval_rashomon_dropout"):
        assert (out / "boards" / f"{board}.html").is_file() and (out / "boards" / f"{board}.csv").is_file()
        assert f'href="boards/{board}.html"' in index
    # the board links its runs, and shows the README's command (a "same" row resolves to the row above)
    attack_board = (out / "boards" / "attack_vit_badnets.html").read_text()
    assert "cl-bench leaderboard --runs runs --out b" in attack_board and "../runs/attacked01.html" in attack_board
    toy = (out / "boards" / "cl_toy.html").read_text()
    assert "cl-bench leaderboard --runs runs --out b" in toy and "and a note" in toy
    assert "0.7000" in toy and "mean ± sample std" in toy and "show every column" in toy
    assert "../runs/clean01.html" in toy  # each row links the run pages of its seeds
    assert (out / ".cl-bench-report").is_file() and (out / "assets" / "report.js").is_file()


def test_every_link_and_image_of_every_page_resolves(site):
    out = site["dir"]
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 5
    for page in pages:
        parser = parse(page)
        for target in parser.targets:
            if target.startswith("data:"):
                continue
            assert not urllib.parse.urlparse(target).scheme, f"{page}: {target} leaves the report"
            path, _, fragment = target.partition("#")
            resolved = (page.parent / urllib.parse.unquote(path)).resolve() if path else page
            assert resolved.is_file(), f"{page.relative_to(out)}: {target} does not resolve"
            assert out.resolve() in resolved.parents, f"{page}: {target} points outside the report"
            if fragment:
                assert fragment in parse(resolved).ids, f"{page}: #{fragment} is not in {resolved.name}"


def test_hostile_record_text_is_escaped_everywhere(site):
    out = site["dir"]
    pages = {page: page.read_text(encoding="utf-8") for page in out.rglob("*.html")}
    for page, text in pages.items():
        assert HOSTILE not in text and "window.pwned=1</script>" not in text, page
        assert text.count("<script") == 1, page  # the report's own script, nothing else
    hostile_page = next(text for page, text in pages.items() if page.parent.name == "runs" and "naive&lt;" in text)
    assert "&lt;img src=x onerror=&quot;window.pwned=2&quot;&gt;" in hostile_page  # command, config, environment
    assert "rashomon_dropout" in hostile_page and "cl-bench evaluate runs/x" in hostile_page  # the evaluation
    # the hostile run id is not a path: its page is named by a safe slug inside runs/
    assert all(page.parent.name == "runs" or page.parent.name in ("boards", out.name) for page in pages)


def test_run_page_shows_the_attack_branches_timings_and_config(site):
    page = (site["dir"] / "runs" / "attacked01.html").read_text()
    for fragment in (
        "attack_rows, attack_rows_clean",
        "0.8750",  # asr after experience 2, attacked branch
        "0.0625",  # and clean
        "clean branch (no attack)",
        "Timings",
        "Resolved config",
        "Environment",
        "cl-bench run --strategy ewc --seed 1",
        'src="attacked01/heatmap.png"',
    ):
        assert fragment in page, fragment
    assert (site["dir"] / "runs" / "attacked01" / "record.json").is_file()


def digest(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_rebuild_replaces_the_report_byte_for_byte_and_one_run_gets_its_own_page(inputs, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["report", str(inputs["runs"] / "c_attacked"), "--out", str(out)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and stdout.strip().splitlines()[-1] == str(out / "runs" / "attacked01.html")  # the page to open
    first = digest(out)
    assert "runs/attacked01.html" in first and "index.html" in first
    (out / "stale.txt").write_text("from an older report")
    assert run_cli(args, capsys)[0] == 0
    assert digest(out) == first  # deterministic, and the old report is replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary directory left


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing runs dir", "is not a directory"),
        ("empty runs dir", "no complete run records"),
        ("corrupt run dir", "is not valid JSON"),
        ("run dir without record", "holds no record.json"),
        ("nothing to report", "nothing to report"),
        ("no boards", "no board CSVs"),
        ("out is someone else's", "did not write"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(inputs, tmp_path, capsys, case, fragment):
    (tmp_path / "empty").mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    out = foreign if case == "out is someone else's" else tmp_path / "report"
    args = {
        "missing runs dir": ["--runs", str(tmp_path / "absent")],
        "empty runs dir": ["--runs", str(tmp_path / "empty")],
        "corrupt run dir": [str(inputs["runs"] / "d_broken")],
        "run dir without record": [str(inputs["runs"])],
        "nothing to report": [],
        "no boards": ["--leaderboards", str(tmp_path / "empty")],
        "out is someone else's": ["--runs", str(inputs["runs"])],
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, stderr = run_cli(["report", *args, "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: ") and fragment in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary directory
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_a_failure_while_writing_keeps_the_previous_report(site, inputs, tmp_path, monkeypatch):
    out = tmp_path / "report"
    shutil.copytree(site["dir"], out)  # a previous report
    before = digest(out)

    def fail(*args: Any, **kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "render_run", fail)
    with pytest.raises(OSError):
        report.build_report(out, [inputs["runs"]], warn=lambda message: None)
    assert digest(out) == before and [p.name for p in tmp_path.iterdir()] == ["report"]
    shutil.rmtree(out)
    with pytest.raises(OSError):
        report.build_report(out, [inputs["runs"]], warn=lambda message: None)
    assert list(tmp_path.iterdir()) == []


def test_a_report_needs_neither_torch_nor_avalanche(inputs, tmp_path):
    """Reading records and boards and drawing with matplotlib: the report stays as light as the leaderboard."""
    code = (
        "import sys; from pathlib import Path; from cl_bench.report import build_report; "
        f"build_report(Path({str(tmp_path / 'report')!r}), [Path({str(inputs['runs'])!r})], "
        f"leaderboards=Path({str(inputs['boards'])!r}), warn=lambda message: None); "
        "heavy = [m for m in ('torch', 'avalanche') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "report" / "index.html").is_file()


def test_readme_rows_give_each_board_its_command_and_same_repeats_the_row_above():
    readme = (
        "| file | sweeps | commands |\n|---|---|---|\n"
        "| `a.csv` (x `y`) | `s.yaml` | `cl-bench one && cl-bench two` |\n"
        "| `b.csv` | same | same (needs `data`) |\n"
        "| `sub/attack_*.csv` | `t.yaml` | `cl-bench three` |\n"
    )
    rows = report.board_commands(readme)
    assert rows[0] == (["a.csv"], "`s.yaml`", "`cl-bench one && cl-bench two`")
    assert rows[1] == (["b.csv"], "`s.yaml`", "`cl-bench one && cl-bench two` (needs `data`)")
    assert rows[2][0] == ["sub/attack_*.csv"]


# ----------------------------------------------------------------------------- the site in headless Chromium


def chromium_path() -> str | None:
    """Debian's chromium (or $CL_BENCH_CHROMIUM); None where there is none."""
    candidates = [os.environ.get("CL_BENCH_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    return next((found for name in candidates if name and (found := shutil.which(name))), None)


class Chromium:
    """Headless Chromium driven over the DevTools protocol (websocket-client): no driver binary, no download."""

    def __init__(self, executable: str) -> None:
        import websocket

        self.profile = Path(tempfile.mkdtemp(prefix="cl-bench-chromium-"))
        self.process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",  # the tests may run as root (CI does)
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.events: list[dict] = []
        self.next_id = 0
        try:
            port_file = self.profile / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.is_file() and port_file.read_text().strip()):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
            pages: list[dict] = []
            while not pages:
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium opened no page")
                targets = json.loads(local.open(f"http://127.0.0.1:{port}/json/list", timeout=5).read())
                pages = [target for target in targets if target.get("type") == "page"]
            self.socket = websocket.create_connection(
                pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
            )
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
        except Exception:
            self.close()
            raise

    def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while not any(event.get("method") == "Page.loadEventFired" for event in self.events):
            assert time.monotonic() < deadline, f"{url} did not load"
            self.events.append(json.loads(self.socket.recv()))
        self.evaluate("new Promise(done => setTimeout(done, 100))")  # let late console messages arrive

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails"))[:300])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:300])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":  # failed loads, CSP
                found.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the element."""
        x, y = self.evaluate(
            f"(() => {{ const element = document.querySelector({json.dumps(selector)});"
            " element.scrollIntoView({block: 'center'}); const box = element.getBoundingClientRect();"
            " return [box.x + box.width / 2, box.y + box.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it when run as root)")
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e '.[test]')")
    chromium = Chromium(executable)
    yield chromium
    chromium.close()


# what a page must satisfy once loaded: every image decoded, every link to an existing file of the report
CHECK_PAGE = """(() => ({
  broken_images: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  pwned: window.pwned === undefined ? null : window.pwned,
}))()"""


def column(browser: Chromium, table: str, index: int) -> list[str]:
    return browser.evaluate(
        f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(row => row.cells[{index}].textContent)"
    )


def test_the_report_in_headless_chromium(site, browser, tmp_path, record_property):
    out = site["dir"]
    pages = [out / "index.html", out / "runs" / "attacked01.html", out / "boards" / "cl_toy.html"]
    pages += [page for page in sorted((out / "runs").glob("*.html")) if page not in pages]
    for page in pages:
        browser.open(page.as_uri())
        assert browser.console_errors() == [], page
        state = browser.evaluate(CHECK_PAGE)
        assert state["broken_images"] == [], page
        assert state["pwned"] is None, page  # no hostile markup ran
        for link in state["links"]:
            parsed = urllib.parse.urlparse(link)
            assert parsed.scheme == "file", f"{page.name}: {link} is not a file of the report"
            assert Path(urllib.parse.unquote(parsed.path)).is_file(), f"{page.name}: {link} does not resolve"
        shot = browser.screenshot(tmp_path / f"{page.parent.name}_{page.stem}.png"[:100])
        assert shot.stat().st_size > 5_000

    # the runs table of the index sorts by ACC when its header is clicked: ascending, then descending
    browser.open((out / "index.html").as_uri())
    header = browser.evaluate("Array.from(document.querySelectorAll('#runs thead th')).map(th => th.textContent)")
    acc = header.index("ACC")
    browser.click(f"#runs thead th:nth-child({acc + 1}) button")
    values = [float(text) for text in column(browser, "runs", acc)]
    assert values == sorted(values) and len(set(values)) > 1
    assert browser.evaluate(f"document.querySelectorAll('#runs thead th')[{acc}].getAttribute('aria-sort')") == (
        "ascending"
    )
    browser.click(f"#runs thead th:nth-child({acc + 1}) button")
    assert [float(text) for text in column(browser, "runs", acc)] == sorted(values, reverse=True)
    # and filters: typing keeps the matching rows only
    browser.click("input.row-filter[data-table='runs']")
    browser.call("Input.insertText", text="attacked01")
    visible = browser.evaluate("Array.from(document.querySelectorAll('#runs tbody tr')).filter(r => !r.hidden).length")
    assert visible == 1
    assert browser.console_errors() == []
    shot = browser.screenshot(tmp_path / "index_sorted_filtered.png")
    record_property("screenshot", str(shot))
    print(f"screenshots in {tmp_path}")


def test_the_committed_report_is_the_one_the_boards_give(tmp_path, capsys, monkeypatch):
    """docs/report/ is `cl-bench report --leaderboards leaderboards --out docs/report` of the committed boards."""
    from conftest import REPOSITORY

    monkeypatch.chdir(REPOSITORY)
    out = tmp_path / "report"
    code, _, err = run_cli(["report", "--leaderboards", "leaderboards", "--out", str(out)], capsys)
    assert code == 0, err
    committed = REPOSITORY / "docs" / "report"
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert written == sorted(path.relative_to(committed).as_posix() for path in committed.rglob("*") if path.is_file())
    for name in written:
        fresh = (out / name).read_bytes().replace(str(out).encode(), b"docs/report")
        assert fresh == (committed / name).read_bytes(), f"docs/report/{name} is stale: regenerate it"
