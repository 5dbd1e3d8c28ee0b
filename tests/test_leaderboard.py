import shutil
from pathlib import Path
import subprocess
from html.parser import HTMLParser

import pytest

from bench.leaderboard import build_site
from bench.results import Latency, RunResult, Training
from bench.specs import RunSpec


def fake_result(method, dataset, seed, ndcg10, sps=0.01, label=None):
    spec = RunSpec(method=method, dataset=dataset, seed=seed, label=label)
    metrics = {"HR@5": ndcg10 * 1.5, "HR@10": ndcg10 * 2, "HR@20": ndcg10 * 3,
               "NDCG@5": ndcg10 * 0.8, "NDCG@10": ndcg10, "NDCG@20": ndcg10 * 1.2}
    return RunResult(run_id=spec.run_id(), spec=spec, method_info={"name": method, "family": "traditional"},
                     metrics=metrics, latency=Latency(seconds_per_sample=sps, total_seconds=sps * 100, n_samples=100,
                                                      batch_size=10, warmup_batches=1),
                     training=Training(seconds=5.0), data={"name": dataset, "stats": {"users": 100}},
                     environment={"git_commit": "abc", "hardware": {"torch_threads": 1}},
                     method_facts={"row": {"settings": {}, "paper_tables": [],
                                           "command": f"reasonrec run --method {method} --dataset {dataset}"}})


@pytest.fixture
def site(tmp_path):
    runs = tmp_path / "runs"
    rows = [("a", 0, 0.04, 0.02), ("a", 1, 0.06, 0.02), ("b", 0, 0.03, 0.001), ("c", 0, 0.01, 0.5)]
    for m, seed, v, sps in rows:
        r = fake_result(m, "beauty", seed, v, sps, label=f"<{m}>" if m == "c" else None)
        r.to_disk(runs / r.run_id)
    r = fake_result("a", "ml-100k", 0, 0.1)
    r.to_disk(runs / r.run_id)
    return build_site([runs], tmp_path / "site")


class Tables(HTMLParser):
    """Collect table rows: (table class, dataset) -> [[cell text, markup tag]]."""

    def __init__(self):
        super().__init__()
        self.tables, self.cur, self.row, self.cell, self.tag = {}, None, None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.cur = self.tables.setdefault((a.get("class"), a.get("data-dataset")), [])
        elif tag == "tr" and self.cur is not None:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell, self.tag = "", None
        elif tag in ("b", "u") and self.cell is not None:
            self.tag = tag

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append((self.cell.strip(), self.tag))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.cur.append(self.row)
            self.row = None
        elif tag == "table":
            self.cur = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_table1_and_table4(site):
    p = Tables()
    p.feed(site.read_text())
    t1 = p.tables[("table1", "beauty")]
    header = [c for c, _ in t1[0]]
    assert header[:8] == ["Method", "Family", "N@5", "N@10", "N@20", "HR@5", "HR@10", "HR@20"]
    body = {r[0][0]: r for r in t1[1:] if not r[0][0].startswith(("paper: ", "reference: "))}
    assert list(body) == ["a", "b", "<c>"]  # sorted by NDCG@10, label escaped but shown
    # reference rows from other sources (TIGER's paper and reruns) after the paper's, named as such
    refs = [r for r in t1[1:] if r[0][0].startswith("reference: ")]
    assert [r[0][0] for r in refs] == ["reference: TIGER (its paper, Rajput et al. 2023)",
                                       "reference: TIGER (cornac's reruns)"]
    assert refs[0][3] == ("0.0384", None) and t1.index(refs[0]) > t1.index(body["<c>"])
    # the paper's published Beauty rows follow ours, marked, and never take the bold / underline
    paper = [r for r in t1[1:] if r[0][0].startswith("paper: ")]
    assert [r[0][0] for r in paper][:2] == ["paper: LASAR", "paper: Explicit CoT (GREAM)"]
    assert paper[0][3] == ("0.0303", None) and t1.index(paper[0]) > t1.index(body["<c>"])
    assert body["a"][3] == ("0.0500 ± 0.0141", "b")  # mean of 0.04, 0.06; best is bold
    assert body["b"][3] == ("0.0300", "u")           # second is underlined
    assert body["<c>"][3] == ("0.0100", None)
    t4 = [r for r in p.tables[("table4", "beauty")] if not r[0][0].startswith("paper: ")]
    assert [r[0][0] for r in t4[1:]] == ["b", "a", "<c>"]  # fastest first
    assert t4[1][1] == ("1.000", "b")
    assert ("table1", "ml-100k") in p.tables


def test_site_is_self_contained_and_escaped(site):
    html = site.read_text()
    assert "&lt;c&gt;" in html and "<c>" not in html
    assert "http://" not in html and "https://" not in html  # no CDN
    assert (site.parent / "style.css").is_file()
    pages = list((site.parent / "runs").glob("*.html"))
    assert len(pages) == 5
    page = pages[0].read_text()
    assert "git commit" in page and "reasonrec run --method" in page


def test_conflicting_configs_under_one_name(tmp_path):
    runs = tmp_path / "runs"
    for cfg in ({}, {"x": 1}):
        spec = RunSpec(method="a", dataset="d", method_config=cfg)
        r = fake_result("a", "d", 0, 0.1).model_copy(update={"spec": spec, "run_id": spec.run_id()})
        r.to_disk(runs / r.run_id)
    index = build_site([runs], tmp_path / "site")  # one row each, told apart by their run ids' digests
    p = Tables()
    p.feed(index.read_text())
    names = sorted(r[0][0] for r in p.tables[("table1", "d")][1:])
    assert len(names) == 2 and all(n.startswith("a · ") for n in names) and names[0] != names[1]


def test_bad_result_file_is_named(tmp_path):
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "result.json").write_text("{}")
    with pytest.raises(ValueError, match=r"x/result\.json: not a valid result file"):
        build_site([tmp_path / "runs"], tmp_path / "site")


def test_leaderboard_never_imports_torch():
    import sys

    code = "import sys, bench.leaderboard; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browse(exe, url, profile, *extra, dom=True):
    """Headless Chromium on a file URL: (DOM, console lines) -- console messages go to stderr."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *extra]
    out = subprocess.run(cmd + (["--dump-dom"] if dom else []) + [url], capture_output=True, text=True, timeout=120)
    return out.stdout, [line for line in out.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.browser
def test_site_in_headless_chromium(tmp_path):
    """Every page loads with no console message (a broken stylesheet, an executed injected script or a
    JS error would log one); a hostile label is text, not markup; the Pareto SVG is painted (its red front
    markers are in the screenshot); screenshots of the index and a run page are saved
    (``REASONREC_SCREENSHOTS`` or the test's temporary folder)."""
    import os

    from PIL import Image

    exe = _chromium()
    if exe is None:
        pytest.fail("chromium not found: apt-get install chromium")
    runs = tmp_path / "runs"
    hostile = '<script>console.error("xss")</script><b>x'
    for m, v, sps, label in [("a", 0.05, 0.02, None), ("b", 0.03, 0.001, None), ("c", 0.01, 0.5, hostile)]:
        r = fake_result(m, "beauty", 0, v, sps, label=label)
        r.to_disk(runs / r.run_id)
    site = build_site([runs], tmp_path / "site")
    pages = sorted(site.parent.rglob("*.html"))
    assert len(pages) == 5
    import re

    for page in pages:
        dom, console = _browse(exe, page.resolve().as_uri(), tmp_path / "profile")
        assert console == [], (page.name, console)
        assert "<script" not in dom.lower(), page.name  # the label was escaped, never parsed as markup
        for link in re.findall(r'(?:href|src)="([^"#]+)', dom):  # every link of the loaded page resolves
            assert "://" not in link and (page.parent / link).resolve().is_file(), (page.name, link)
    dom, _ = _browse(exe, site.resolve().as_uri(), tmp_path / "profile")
    p = Tables()
    p.feed(dom)
    ours = [r for r in p.tables[("table1", "beauty")][1:] if not r[0][0].startswith(("paper: ", "reference: "))]
    assert [r[0][0] for r in ours] == ["a", "b", hostile]
    assert ours[0][3] == ("0.0500", "b") and ours[1][3] == ("0.0300", "u")
    shots = Path(os.environ.get("REASONREC_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    run_page = next(pg for pg in pages if pg.parent.name == "runs")
    for name, page in (("index.png", site), ("run.png", run_page)):
        _browse(exe, page.resolve().as_uri(), tmp_path / "profile", f"--screenshot={shots / name}",
                "--window-size=1280,3000", "--hide-scrollbars", dom=False)
        assert (shots / name).stat().st_size > 5000
    img = Image.open(shots / "index.png").convert("RGB")
    red = sum(1 for px in img.getdata() if px[0] > 190 and px[1] < 80 and px[2] < 80)  # #d62728
    assert red > 30, "the Pareto front (red markers) was not painted"


#: measures every Pareto chart's label boxes in the browser (SVG getBBox, the chart's own coordinates): pairs that
#: overlap and boxes outside the chart, written into the page for --dump-dom to return
_MEASURE = """<script>
window.addEventListener('load', () => {
  const out = [];
  document.querySelectorAll('svg').forEach((svg, n) => {
    if (!svg.querySelector('polyline.front')) return;
    const vb = svg.viewBox.baseVal;
    const boxes = [...svg.querySelectorAll('text.label, text.label-ref')].map(t => [t.textContent, t.getBBox()]);
    boxes.forEach(([name, b]) => {
      if (b.x < vb.x - 0.5 || b.y < vb.y - 0.5 || b.x + b.width > vb.x + vb.width + 0.5 || b.y + b.height > vb.y + vb.height + 0.5)
        out.push({chart: n, clipped: name});
    });
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [p, a] = boxes[i], [q, b] = boxes[j];
      const w = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
      const h = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
      if (w > 0.5 && h > 0.5) out.push({chart: n, overlap: [p, q]});
    }
    out.push({chart: n, labels: boxes.length});
  });
  const pre = document.createElement('pre'); pre.id = 'label-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _label_check(exe, page: Path, profile) -> list[dict]:
    """What :data:`_MEASURE` finds on ``page`` (a copy with the script appended, beside it: links resolve)."""
    import json
    import re

    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    try:
        dom, console = _browse(exe, probe.resolve().as_uri(), profile)
    finally:
        probe.unlink()
    assert console == [], console
    found = re.search(r'<pre id="label-check">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.mark.browser
def test_committed_results_site_in_headless_chromium(tmp_path):
    """The site of the committed results (Beauty, Sports, Instruments and the ml-100k demo rows), built as the
    README says: every page loads with no console message and every link resolves; no two labels of a Pareto
    chart overlap and none is cut at the chart's edge (their boxes measured in the browser). Screenshots of
    the index go to ``REASONREC_SCREENSHOTS`` when set (the README's)."""
    import os
    import re

    from bench.leaderboard import main_rows

    exe = _chromium()
    if exe is None:
        pytest.fail("chromium not found: apt-get install chromium")
    root = Path(__file__).resolve().parents[1]
    site = build_site([root / "leaderboard" / "results"], tmp_path / "site",
                      main=main_rows(sorted((root / "leaderboard" / "suites").glob("table1-*.yaml"))))
    pages = sorted(site.parent.rglob("*.html"))
    assert len(pages) > 50
    for page in pages:
        dom, console = _browse(exe, page.resolve().as_uri(), tmp_path / "profile")
        assert console == [], (page.name, console)
        for link in re.findall(r'(?:href|src)="([^"#]+)', dom):
            assert "://" not in link and (page.parent / link).resolve().is_file(), (page.name, link)
    found = _label_check(exe, site, tmp_path / "profile")
    charts = [f for f in found if "labels" in f]
    assert len(charts) >= 3 and all(f["labels"] > 0 for f in charts)  # a Pareto chart per dataset, labelled
    assert [f for f in found if "labels" not in f] == []  # no overlap, no clipped label
    shots = os.environ.get("REASONREC_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        _browse(exe, site.resolve().as_uri(), tmp_path / "profile", f"--screenshot={Path(shots) / 'leaderboard-index.png'}",
                "--window-size=1400,1500", "--hide-scrollbars", dom=False)


@pytest.mark.browser
def test_the_label_check_finds_an_overlap(tmp_path):
    """The measurement above is real: two labels drawn on one spot are reported."""
    exe = _chromium()
    if exe is None:
        pytest.fail("chromium not found: apt-get install chromium")
    page = tmp_path / "p.html"
    page.write_text('<html><body><svg viewBox="0 0 200 100" width="200" height="100"><polyline class="front" '
                    'points="0,0 1,1"/><text class="label" x="10" y="20">alpha</text><text class="label" x="12" '
                    'y="22">beta</text><text class="label" x="150" y="60">far</text><text class="label-ref" x="190" '
                    'y="90">cut at the edge</text></svg></body></html>')
    found = _label_check(exe, page, tmp_path / "profile")
    assert {"chart": 0, "overlap": ["alpha", "beta"]} in found
    assert {"chart": 0, "clipped": "cut at the edge"} in found
    assert not [f for f in found if f.get("overlap") and "far" in f["overlap"]]


def test_compare_with_published_table(tmp_path):
    import json

    from bench.compare import compare

    runs = tmp_path / "runs"
    r = fake_result("sasrec", "beauty", 0, 0.04)
    r.to_disk(runs / r.run_id)
    paper = tmp_path / "p.json"
    paper.write_text(json.dumps({"table1_main": {"beauty": {"SASRec": {c: 0.01 for c in
                     ("NDCG@5", "NDCG@10", "NDCG@20", "HR@5", "HR@10", "HR@20")}}}}))
    md = compare(runs, paper)
    assert "| sasrec (seed 0) | 100 | 0.0320 | 0.0400 |" in md and "*paper: SASRec*" in md and "*0.0100*" in md


def test_prompt_style_and_reused_stage_time(tmp_path):
    """Generative rows show their prompt style; an SFT+RL row that reused a cached SFT stage counts
    that stage's training time."""
    runs = tmp_path / "runs"
    r = fake_result("minionerec", "beauty", 0, 0.03)
    r.method_facts = {"prompt_style": "compact"}
    r.training = Training(seconds=60.0, reused_seconds=1800.0)
    r.to_disk(runs / r.run_id)
    p = Tables()
    p.feed(build_site([runs], tmp_path / "site").read_text())
    t1 = p.tables[("table1", "beauty")]
    assert dict(zip([c for c, _ in t1[0]], [c for c, _ in t1[1]]))["Prompt"] == "compact"
    t4 = p.tables[("table4", "beauty")]
    assert dict(zip([c for c, _ in t4[0]], [c for c, _ in t4[1]]))["Training (all phases)"] == "31.0min (incl. reused stages)"


def test_paper_ablation_tables_match_rows_by_config(tmp_path):
    """``Method.paper_tables``: each result is listed under the paper row whose config subset it holds
    (defaults filled in for results that stored only overrides), and not under the others."""
    import json

    from bench.compare import paper_tables
    from bench.specs import RunSpec

    runs = tmp_path / "runs"
    for label, cfg, v in [("cos", {"alignment": "cosine", "rl": {"enabled": False}}, 0.02),
                          ("kl", {"rl": {"enabled": False}}, 0.03),
                          ("rl-no-reinforce", {"rl": {"reinforce": False}}, 0.04)]:
        r = fake_result("lasar", "beauty", 0, v, label=label)
        r.spec = RunSpec(method="lasar", dataset="beauty", label=label, method_config=cfg)
        r.run_id = r.spec.run_id()
        r.method_facts = {}  # written before results carried their row facts: `reasonrec upgrade` adds them
        r.to_disk(runs / r.run_id)
    from bench.rowfacts import upgrade_results

    assert upgrade_results(runs, log=lambda *_: None) == 3
    paper = tmp_path / "p.json"
    paper.write_text(json.dumps({"table2_sft_ablation_beauty": {"+ KL Alignment": {"NDCG@10": 0.0285},
                                                                "+ Cosine Alignment": {"NDCG@10": 0.0277}},
                                 "table3_rl_ablation_beauty": {"+ Terminal KL Alignment": {"NDCG@10": 0.0294}}}))
    md = paper_tables(runs, paper).splitlines()
    at = {}
    for i, line in enumerate(md):
        if line.startswith("| "):
            at.setdefault(line.split(" | ")[0][2:], i)  # first occurrence
    assert at["*paper: + KL Alignment*"] + 1 == at["kl"]
    assert at["*paper: + Cosine Alignment*"] + 1 == at["cos"]
    # GRPO + terminal KL without REINFORCE is the paper's "+ Terminal KL Alignment" row of Table 3
    assert at["*paper: + Terminal KL Alignment*"] + 1 == at["rl-no-reinforce"]
    assert at["*paper: + Terminal KL Alignment*"] > md.index("### Table 3: RL ablations (Beauty)")
    assert sum("rl-no-reinforce" in x for x in md) == 1 and sum(x.startswith("| kl ") for x in md) == 2  # T2 + Fig 4a


def test_published_table_ships_typed_and_complete():
    """The paper's figures ship with the package (no path to the paper needed) and validate; spot values
    as printed in the paper: Beauty LASAR N@10 0.0303, MiniOneRec 0.0295; Table 4 Beauty 0.27 s vs 0.29 s."""
    from bench.published import FILE, PAPER_NAMES, Published, published

    p = published()
    assert FILE.is_file() and isinstance(p, Published)
    assert p.table1_main["beauty"]["LASAR"]["NDCG@10"] == 0.0303
    assert p.table1_main["beauty"]["MiniOneRec"]["NDCG@10"] == 0.0295
    assert p.table4_latency["beauty"]["MiniOneRec"].seconds_per_sample == 0.27
    assert p.table4_latency["beauty"]["LASAR"].seconds_per_sample == 0.29
    assert set(PAPER_NAMES.values()) <= set(p.table1_main["beauty"])
    assert p.section("table3_rl_ablation_beauty")["+ REINFORCE (LASAR)"]["mean_N"] == 2.47


def test_site_v2_significance_lookup_latency_ablations_per_n_and_ci(tmp_path):
    """Paired marks against the best row of each family (from per_user.json); a lookup method is never
    the fastest; LASAR rows fill the paper's ablation tables and their per-N table; the protocol is
    stated; run pages carry bootstrap intervals."""
    import json

    import numpy as np

    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    n = 400
    targets = list(range(n))
    ranks = {"strong": rng.integers(1, 4, n), "weak": rng.integers(5, 40, n), "pop": rng.integers(30, 400, n)}
    fams = {"strong": ("sasrec", "traditional"), "weak": ("lasar", "latent"), "pop": ("pop", "baseline")}
    for name, (method, fam) in fams.items():
        r = fake_result(method, "beauty", 0, 0.1, sps=0.0 if name == "pop" else 0.02, label=name)
        r.method_info["family"] = fam
        if method == "lasar":
            r.spec = RunSpec(method="lasar", dataset="beauty", label=name, method_config={"rl": {"enabled": False}})
            r.run_id = r.spec.run_id()
            r.method_facts = {}  # upgraded below
            r.evaluation = {"max_history": 20, "exclude_history": False, "ks": [5, 10, 20],
                            "inference": {"beam_width": 50},
                            "by_stat": {"latent_steps": {"mean": 2.5, "by_value": {
                                "2": {"users": 200, "share": 0.5, "NDCG@10": 0.02, "HR@10": 0.04},
                                "3": {"users": 200, "share": 0.5, "NDCG@10": 0.01, "HR@10": 0.02}}}}}
        g = np.where(ranks[name] <= 10, 1 / np.log2(ranks[name] + 1), 0.0)
        r.metrics["NDCG@10"] = float(g.mean())
        r.to_disk(runs / r.run_id)
        (runs / r.run_id / "per_user.json").write_text(json.dumps(
            {"users": list(range(n)), "targets": targets, "ranks": ranks[name].tolist(), "stats": {}}))
    from bench.rowfacts import upgrade_results

    upgrade_results(runs, log=lambda *_: None)
    site = build_site([runs], tmp_path / "site")
    html = site.read_text()
    p = Tables()
    p.feed(html)
    t1 = {r[0][0]: r for r in p.tables[("table1", "beauty")][1:]}
    head = [c for c, _ in p.tables[("table1", "beauty")][0]]
    sig = head.index(next(h for h in head if h.startswith("vs best row")))
    assert head[sig] == "vs best rowpaired t-test, Holm, p < 0.05"
    # against the table's best row, one word per metric (Holm-corrected), readable without a legend
    assert t1["strong"][sig][0] == "best row"
    assert t1["weak"][sig][0] == "N@10 lower · HR@10 lower" and t1["pop"][sig][0] == "N@10 lower · HR@10 lower"
    t4 = {r[0][0]: r for r in p.tables[("table4", "beauty")][1:]}
    assert t4["pop"][1] == ("0.000 (lookup)", None) and t4["strong"][1][1] == "b"  # pop is fastest, not marked
    ab = p.tables[("ablation", "beauty")]
    names = [r[0][0] for r in ab[1:]]
    assert names.index("paper: + KL Alignment") + 1 == names.index("weak")  # the default alignment is KL
    per_n = p.tables[("stat", "beauty")]
    assert [c for c, _ in per_n[0]] == ["Row", "mean", "2", "3"] and per_n[1][2][0] == "50.0% / 0.0200 / 0.0400"
    assert "History: the last 20 interactions" in html and "full item catalogue" in html
    sasrec = next(x.name for x in runs.iterdir() if x.name.startswith("sasrec"))
    page = (site.parent / "runs" / f"{sasrec}.html").read_text()
    assert "95% CI" in page and " – " in page


def test_pareto_front_and_svg_charts():
    """The front by hand; charts are well-formed XML with one marker per point and escaped labels."""
    import xml.etree.ElementTree as ET

    from bench.svg import line_svg, pareto_front, pareto_svg

    pts = [(1.0, 0.02), (2.0, 0.03), (3.0, 0.025), (0.5, 0.01), (4.0, 0.04), (2.0, 0.01)]
    assert pareto_front(pts) == [3, 0, 1, 4]  # (3.0, 0.025) and (2.0, 0.01) are dominated
    svg = pareto_svg([(f"<m{i}>", x, y) for i, (x, y) in enumerate(pts)] + [("lookup", 0.0, 0.5)],
                     "ms", "N@10", "t & <t>")
    root = ET.fromstring(svg)
    circles = [e for e in root.iter() if e.tag == "circle"]
    assert len(circles) == 6  # a zero latency cannot sit on a log axis: left out
    assert sum("front" in c.get("class") for c in circles) == 4
    assert "<m0>" not in svg and "&lt;m0&gt;" in svg
    line = ET.fromstring(line_svg({"a": [(0, 0.1), (1, 0.2)], "b": [(0, 0.3)]}, "epoch", "v", "x"))
    assert len([e for e in line.iter() if e.tag == "polyline"]) == 2


def test_training_curves_found_at_any_depth():
    from bench.leaderboard import training_curves
    from bench.results import Training

    r = fake_result("lasar", "beauty", 0, 0.02)
    r.training = Training(seconds=1.0, sft={"history": [{"epoch": 0, "valid_score": 0.01},
                                                        {"epoch": 1, "valid_score": 0.02}]},
                          stage2={"history": [{"epoch": 0, "valid_NDCG@10": 0.03}, {"epoch": 1, "valid_NDCG@10": 0.04}]},
                          rl={"history": [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.9}]},  # no score
                          grpo={"history": [{"epoch": 0, "valid_score": 0.02}]})  # one point is no curve
    assert [c["phase"] for c in training_curves(r)] == ["sft", "stage2"]


@pytest.mark.parametrize("method,config,label,extra", [
    ("lasar", {"alignment": "cosine", "stage2": {"max_minutes": 120}, "rl": {"enabled": False}}, "LASAR cos", {}),
    ("sasrec", {}, None, {"data": {"max_history": 50}, "selection": {"metric": "HR@10"}}),
    ("minionerec", {"backbone": {"attention_dropout": 0.1}}, "M (SFT, 'q') #3: yes", {"eval": {"ks": [1, 5]}})])
def test_reproduce_command_rebuilds_the_same_run(method, config, label, extra):
    """The run page's command, parsed as the CLI parses it, gives the same spec and run id."""
    import shlex

    from bench.config import build_spec
    from bench.registry import REGISTRY
    from bench.rowfacts import reproduce_command

    spec = build_spec(method, "ml-100k", seed=1, label=label, method_config=config, **extra)
    assert spec.method_config == REGISTRY.get(method).Config(**config).model_dump(mode="json")  # stored resolved
    r = fake_result(method, "ml-100k", 1, 0.02).model_copy(update={"spec": spec, "run_id": spec.run_id()})
    argv = shlex.split(reproduce_command(r.spec, r.spec.method_config))
    assert argv[:2] == ["reasonrec", "run"]
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    again = build_spec(method, "ml-100k", sets=sets, seed=int(argv[argv.index("--seed") + 1]))
    assert again.run_id() == r.run_id and again.label == label


def test_every_link_resolves_and_registry_page(site):
    """Every href on every page points to a file of the site (relative, no network); the add-your-method
    page lists every registered method with its settings and their descriptions."""
    from html.parser import HTMLParser

    from bench.registry import REGISTRY

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links = []

        def handle_starttag(self, tag, attrs):
            self.links += [v for k, v in attrs if k in ("href", "src") and v]

    root = site.parent
    pages = sorted(root.rglob("*.html"))
    assert (root / "add-your-method.html") in pages
    for page in pages:
        p = Links()
        p.feed(page.read_text())
        assert p.links, page
        for link in p.links:
            assert "://" not in link, (page, link)
            target = link.split("#")[0]
            if target:
                assert (page.parent / target).resolve().is_file(), (page, link)
    reg = (root / "add-your-method.html").read_text()
    for name in REGISTRY.names():
        assert f'id="m-{name}"' in reg
    assert "<code>reason_steps</code>" in reg and "K latent reasoning steps" in reg


def test_paired_ttest_by_hand():
    """d = (1, 1, 1, -1): mean 0.5, sample sd 1, t = 0.5 / (1 / 2) = 1 on 3 degrees of freedom; the t(3)
    cdf is 1/2 + (1/pi) (u / (1 + u^2) + atan u) with u = t / sqrt(3), so p = 2 (1 - F(1)) = 0.391002."""
    import math

    import numpy as np

    from bench.significance import paired_ttest_p

    u = 1 / math.sqrt(3)
    want = 2 * (1 - (0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi))
    assert abs(want - 0.391002) < 1e-6
    assert paired_ttest_p(np.array([1.0, 1.0, 1.0, -1.0])) == pytest.approx(want, abs=1e-9)
    assert paired_ttest_p(np.zeros(5)) == 1.0 and paired_ttest_p(np.full(5, 0.1)) == 0.0


def test_pooled_differences_average_over_the_shared_seeds():
    """Row A has seeds 0 and 1, row B seeds 1 and 2: only seed 1 is shared. With A = B on seed 2 added,
    each user's difference is the mean over seeds 1 and 2."""
    import numpy as np

    from bench.significance import pooled_differences

    pu = lambda ranks: {"users": [0, 1, 2], "targets": [5, 6, 7], "ranks": ranks}  # noqa: E731
    a = {0: pu([1, 1, 1]), 1: pu([1, 0, 3])}
    b = {1: pu([0, 0, 1]), 2: pu([1, 1, 1])}
    d, seeds = pooled_differences(a, b, "HR@10")
    assert seeds == [1] and d.tolist() == [1.0, 0.0, 0.0]
    d, seeds = pooled_differences(a, b, "NDCG@10")
    assert d.tolist() == pytest.approx([1.0, 0.0, 0.5 - 1.0])
    a[2] = pu([0, 1, 1])
    d, seeds = pooled_differences(a, b, "HR@10")
    assert seeds == [1, 2] and d.tolist() == [0.0, 0.0, 0.0]  # ((1 - 0) + (0 - 1)) / 2 for user 0
    assert pooled_differences({0: pu([1, 1, 1])}, {1: pu([1, 1, 1])}, "HR@10")[1] == []
    b[2] = {**pu([1, 1, 1]), "users": [2, 1, 0]}
    with pytest.raises(ValueError, match="seed 2"):
        pooled_differences(a, b, "HR@10")


def test_tuning_trials_are_not_rows_and_history_variants_show(tmp_path):
    """A result scored on the validation split (a tuning trial) is left out; rows at different max
    histories get a History column."""
    runs = tmp_path / "runs"
    for seed, (name, hist, split) in enumerate([("h20", 20, "test"), ("h50", 50, "test"), ("trial", 20, "valid")]):
        r = fake_result("sasrec", "beauty", seed, 0.03, label=name)
        r.evaluation = {"split": split, "max_history": hist}
        r.to_disk(runs / r.run_id)
    p = Tables()
    p.feed(build_site([runs], tmp_path / "site").read_text())
    t1 = p.tables[("table1", "beauty")]
    head = [c for c, _ in t1[0]]
    rows = {r[0][0]: r for r in t1[1:] if not r[0][0].startswith(("paper: ", "reference: "))}
    assert set(rows) == {"h20", "h50"}
    assert rows["h50"][head.index("History")][0] == "50"


def test_training_time_counts_every_reused_phase():
    """A row that reused two cached phases (Stage 1 and a later one) counts both, once each."""
    from bench.report import training_seconds
    from bench.results import Training

    r = fake_result("gream", "beauty", 0, 0.01)
    r.training = Training(seconds=7.0, reused_seconds=2742.0, sft={"seconds": 2742.0, "reused": True},
                          cot_sft={"seconds": 2494.0, "reused": True}, rl={"seconds": 99.0})
    assert training_seconds(r) == 7.0 + 2742.0 + 2494.0


def test_tuning_trials_get_their_own_table(toy_env, tmp_path):
    """Trials of a `reasonrec tune` study are listed per study (best first, settings that differ from
    the defaults), each with a run page, and are not Table 1 rows."""
    import yaml

    from bench.tune import tune

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"method": "sasrec", "params": {
        "method_config.hidden_size": {"type": "categorical", "choices": [8, 16]}},
        "fixed": {"method_config.epochs": 1, "method_config.n_layers": 1, "method_config.n_heads": 1,
                  "method_config.inner_size": 16, "method_config.batch_size": 64}}))
    res = tune("sasrec", "toy", space, tmp_path / "tune", trials=2, progress=False, log=lambda *_: None)
    site = build_site([tmp_path / "tune"], tmp_path / "site")
    p = Tables()
    p.feed(site.read_text())
    rows = p.tables[("tuning", "toy")][1:]
    assert len(rows) == 2 and rows[0][0][0].startswith(res["study"] + " #")
    assert float(rows[0][1][0]) >= float(rows[1][1][0])
    assert "hidden_size=" in rows[0][3][0] and "epochs=1" in rows[0][3][0] and "max_history=" in rows[0][3][0]
    assert ("table1", "toy") not in p.tables
    for t in res["trials"]:
        assert (site.parent / "runs" / f"{t['run_id']}.html").is_file()


def test_seeds_written_in_two_spec_formats_are_one_row(tmp_path):
    """The committed Beauty MiniOneRec seed 0 stored only its overrides (``method_config: {}``) and
    ``valid_metric: ndcg@10`` without ``rl.updates_per_rollout``; seeds 1-2 store the resolved config in
    the current schema. Same configuration: one row with mean +- std over 3 seeds. A real difference in
    the recorded config (here the lr) still refuses to share a display name."""
    from bench.results import upgrade_config

    old_cfg = {"valid_metric": "ndcg@10", "sft": {"lr": 0.002}, "rl": {"enabled": True, "beta": 0.001}}
    new_cfg = {"valid_metric": "protocol", "sft": {"lr": 0.002}, "rl": {"enabled": True, "beta": 0.001,
                                                                         "updates_per_rollout": 1}}
    assert upgrade_config(old_cfg) == new_cfg
    assert upgrade_config(old_cfg, "HR@10")["valid_metric"] == "ndcg@10"  # not the selection metric then
    runs = tmp_path / "runs"
    for seed, v, cfg, overrides in ((0, 0.02, old_cfg, {}), (1, 0.03, new_cfg, new_cfg), (2, 0.04, new_cfg, new_cfg)):
        r = fake_result("minionerec", "beauty", seed, v, label="M")
        r.spec = r.spec.model_copy(update={"method_config": overrides})
        r.method_facts = {"config": cfg}
        r.data["fingerprint"] = "f0"
        r.to_disk(runs / f"minionerec-beauty-s{seed}-x")
    index = build_site([runs], tmp_path / "site")
    text = index.read_text()
    assert "0.0300 ± 0.0100" in text  # N@10 over the three seeds
    bad = fake_result("minionerec", "beauty", 3, 0.05, label="M")
    bad.method_facts = {"config": {**new_cfg, "sft": {"lr": 0.001}}}
    bad.data["fingerprint"] = "f0"
    bad.to_disk(runs / "minionerec-beauty-s3-x")
    text = build_site([runs], tmp_path / "site2").read_text()
    p = Tables()
    p.feed(text)
    rows = {r[0][0]: r for r in p.tables[("table1", "beauty")][1:] if r[0][0].startswith("M")}
    assert len(rows) == 2 and all(n.startswith("M · ") for n in rows)  # the three seeds one row, the odd one apart
    assert any("0.0300 ± 0.0100" in c for r in rows.values() for c, _ in r)


def test_the_site_is_built_from_result_files_alone(toy_env, tmp_path, monkeypatch):
    """What the site shows that only the methods know (the ablation tables a row fills, the settings that differ
    from the defaults, the command that remakes it) is written into the result when it runs (method_facts.row);
    summarising and the run pages import no method, config class or card (issue 24): a site can be built on a
    machine without the plugins that made the rows."""
    import sys

    from bench.config import build_spec
    from bench.runner import run

    res = run(build_spec("pop", "toy", label="Popularity"), tmp_path, progress=False, echo=False)
    row = res.method_facts["row"]
    assert row["command"].startswith("reasonrec run --method pop --dataset toy") and "label=" in row["command"]
    assert row["paper_tables"] == [] and isinstance(row["settings"], dict)
    lasar_sft = {"alignment": "kl", "latent": True, "two_stage": True, "forced_steps": None, "stage1_cot_samples": 0,
                 "rl": {"enabled": False}}
    from bench.rowfacts import paper_tables

    fills = paper_tables("lasar", "beauty", {**lasar_sft, "alignment": "cosine"})
    assert [(t["table"], t["matched"]) for t in fills] == [("table2_sft_ablation_beauty", [4])]
    r = fake_result("lasar", "beauty", 0, 0.02)
    r.method_facts["row"] = {"settings": {"alignment": "cosine"}, "command": "reasonrec run ...",
                             "paper_tables": fills}
    # a table's rows are only appended: a result written when it had fewer rows keeps its index, a newer
    # result's row past the old end is shown (the longest list is the table's), whichever result comes first
    old = fake_result("lasar", "beauty", 0, 0.01)
    old.spec = old.spec.model_copy(update={"label": "old mixed"})
    old.method_facts["row"] = {"settings": {}, "command": "", "paper_tables": [
        {**fills[0], "paper_rows": fills[0]["paper_rows"][:7], "matched": [6]}]}
    new = fake_result("lasar", "beauty", 0, 0.03)
    new.spec = new.spec.model_copy(update={"label": "new text pass"})
    new.method_facts["row"] = {"settings": {}, "command": "", "paper_tables": [{**fills[0], "matched": [7]}]}
    for mod in [m for m in sys.modules if m == "bench.registry" or m.startswith("methods")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "bench.registry", None)  # importing it now fails
    from bench.runpage import run_page_facts
    from bench.summary import ablation_tables, tuning_tables

    (table,) = ablation_tables([r])
    assert table["key"] == "table2_sft_ablation_beauty"
    ours = [x for x in table["rows"] if not x["paper"]]
    assert [x["run_id"] for x in ours] == [r.run_id] and ours[0]["counterpart"] == "+ Cosine Alignment"
    names = [x["name"] for x in table["rows"]]
    assert names.index("+ Cosine Alignment") + 1 == names.index(r.display_name)  # under its paper row
    assert run_page_facts(r)["command"] == "reasonrec run ..."
    assert tuning_tables([r])["beauty"][0]["rows"][0]["settings"].startswith("alignment=cosine")
    for order in ([old, new], [new, old]):
        (table,) = ablation_tables(order)
        assert [x["name"] for x in table["rows"] if not x["paper"]][-2:] == ["old mixed", "new text pass"]


def test_one_upgrade_reads_older_result_files(tmp_path):
    """bench.results.upgrade is where older result formats become the current one: a result from before
    tuning (no evaluation.split), before results recorded their resolved config (overrides only, an old
    valid_metric spelling), and before phases marked a reused stage (training.reused_seconds only)."""
    import json

    from bench.report import training_seconds
    from bench.results import RunResult

    r = fake_result("minionerec", "beauty", 0, 0.02)
    obj = r.model_dump(mode="json")
    obj["spec"]["method_config"] = {"valid_metric": "ndcg@10", "rl": {"enabled": True}}
    obj["method_facts"] = {}
    obj["evaluation"] = {"max_history": 20}
    obj["training"] = {"seconds": 100.0, "reused_seconds": 2000.0, "sft": {"epochs_run": 3}, "rl": {"steps": 2}}
    (tmp_path / "result.json").write_text(json.dumps(obj))
    got = RunResult.from_disk(tmp_path / "result.json")
    assert got.evaluation["split"] == "test"
    assert got.method_facts["config"] == {"valid_metric": "protocol", "rl": {"enabled": True, "updates_per_rollout": 1}}
    assert training_seconds(got) == 2100.0 and got.training.model_extra["sft"]["reused"]
    assert got.configuration()["method_config"] == got.method_facts["config"]


def test_holm_adjusts_hand_computed():
    """Holm-Bonferroni: p sorted 0.01, 0.02, 0.04 with m = 3 -> 0.03, 0.04, 0.04 (monotone), in input order."""
    from bench.summary import holm

    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([]) == []


def test_table1_holds_the_main_rows_and_the_rest_follow(tmp_path):
    """With the Table-1 suite's entries (reasonrec leaderboard --main), Table 1 holds those rows only; the
    dataset's other rows (ablations, variants) are listed in a table of their own, without marks."""
    from bench.leaderboard import main_rows

    runs = tmp_path / "runs"
    for m, v, label, seed in [("a", 0.04, "A", 0), ("b", 0.03, None, 0), ("a", 0.02, "A ablation", 1)]:
        r = fake_result(m, "beauty", seed, v, label=label)
        r.to_disk(runs / r.run_id)
    suite = tmp_path / "table1-beauty.yaml"
    suite.write_text("methods:\n  - {method: a, label: A}\n  - b\ndatasets: [beauty]\n")
    assert main_rows([suite]) == {("beauty", "a", "A"), ("beauty", "b", None)}
    p = Tables()
    p.feed(build_site([runs], tmp_path / "site", main=main_rows([suite])).read_text())
    assert [r[0][0] for r in p.tables[("table1", "beauty")][1:] if r[0][0] and not r[0][0].startswith(("paper", "reference"))] \
        == ["A", "b"]
    assert [r[0][0] for r in p.tables[("others", "beauty")][1:]] == ["A ablation"]
    p = Tables()  # without --main: every row in Table 1, no second table
    p.feed(build_site([runs], tmp_path / "site2").read_text())
    assert len([r for r in p.tables[("table1", "beauty")][1:] if not r[0][0].startswith(("paper", "reference"))]) == 3
    assert ("others", "beauty") not in p.tables


def test_pareto_labels_never_overlap_or_leave_the_plot():
    """Twelve rows at nearly the same latency and accuracy (the Beauty LASAR rows that blurred into a blob, long
    names that were cut at the right edge): every label drawn has a box inside the plot that overlaps no other
    label and no point; the ones that fit nowhere are numbered and listed below the chart."""
    import re

    from bench.svg import H, PAD_B, PAD_L, PAD_R, PAD_T, W, label_boxes, pareto_svg

    pts = [(f"LASAR v1 ablation number {i}", 30 + i * 0.1, 0.024 + i * 0.0001) for i in range(12)]
    pts += [("GREAM (reasoning) with a very long name at the right edge", 900.0, 0.007), ("pop", 0.01, 0.005)]
    svg = pareto_svg(pts, "ms", "N@10", "t")
    drawn = re.findall(r'<text class="label"[^>]*>([^<]*)</text>', svg)
    legend = [re.sub(r" \(its point: [^)]*\)$", "", li) for li in re.findall(r"<li>([^<]*)</li>", svg)]
    assert sorted(drawn + legend) == sorted(p[0] for p in pts) and legend  # every row named once
    # the legend's numbers are drawn at their points, each once (placed like labels: the browser test measures them)
    numbers = re.findall(r'<text class="label-ref"[^>]*>([^<]*)</text>', svg)
    assert len(set(numbers)) == len(numbers) and set(numbers) <= {str(n + 1) for n in range(len(legend))}
    from bench.svg import _Axes

    ax = _Axes([x for _, x, _ in pts], [y for _, _, y in pts], log_x=True)
    px = [(ax.px(x), ax.py(y)) for _, x, y in pts]
    boxes = [w[3] for w in label_boxes(px, [p[0] for p in pts]) if w is not None]
    assert len(boxes) == len(drawn)
    for i, a in enumerate(boxes):
        assert PAD_L <= a[0] and a[2] <= W - PAD_R and PAD_T <= a[1] and a[3] <= H - PAD_B
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
        for x, y in px:
            assert not (a[0] < x + 4 and x - 4 < a[2] and a[1] < y + 4 and y - 4 < a[3])


def test_the_index_header_says_what_the_results_say(tmp_path):
    """The opening sentences are derived from the rows (issue 28: the demo's header claimed ~2M-parameter
    backbones, "full-size and well trained" baselines after one epoch, and published rows ml-100k lacks)."""
    from bench.results import Training

    runs = tmp_path / "runs"
    r = fake_result("sasrec", "ml-100k", 0, 0.05)
    r.training = Training(seconds=5.0, epochs_run=1, stopped_by="epochs")
    r.to_disk(runs / r.run_id)
    g = fake_result("minionerec", "ml-100k", 0, 0.04)
    g.method_info["family"] = "generative"
    g.method_facts["parameters"] = 153_000
    g.to_disk(runs / g.run_id)
    text = build_site([runs], tmp_path / "site").read_text()
    assert "0.15M parameters" in text and "ran 1 epochs; stopped by: epochs (1)" in text
    assert "well trained" not in text and "published rows" not in text and "2M" not in text


def test_reference_rows_from_other_sources_sit_beside_the_papers():
    from bench.summary import paper_rows

    t1, _ = paper_rows("beauty", ["NDCG@10", "HR@10"])
    refs = {r["name"]: r for r in t1 if r["kind"] == "reference"}
    assert refs["TIGER (its paper, Rajput et al. 2023)"]["cells"] == {"NDCG@10": "0.0384", "HR@10": ""}
    assert refs["TIGER (cornac's reruns)"]["cells"]["NDCG@10"] == "0.0338-0.0353"
    assert any(r["kind"] == "paper" and r["name"] == "LASAR" for r in t1)
    assert not [r for r in paper_rows("instruments", ["NDCG@10"])[0] if r["kind"] == "reference"]


def test_a_superseded_row_leaves_the_paper_tables_and_says_so(tmp_path):
    from bench.results import RunResult
    from bench.rowfacts import paper_tables, supersede
    from bench.summary import ablation_tables

    fills = paper_tables("lasar", "beauty", {"alignment": "none", "latent": True, "two_stage": True,
                                             "forced_steps": None, "stage1_cot_samples": 0, "rl": {"enabled": False}})
    runs = tmp_path / "runs"
    made = []
    for seed, label, v in ((7, "v1 w/o alignment", 0.02), (0, "w/o alignment", 0.03)):
        r = fake_result("lasar", "beauty", seed, v, label=label)
        r.method_facts["row"] = {"settings": {}, "command": "reasonrec run ...", "paper_tables": fills}
        r.to_disk(runs / r.run_id)
        made.append(r)
    old, new = made
    with pytest.raises(ValueError, match="no row facts"):
        bare = fake_result("pop", "beauty", 0, 0.01)
        bare.method_facts = {}
        bare.to_disk(runs / bare.run_id)
        supersede(runs / bare.run_id, new.run_id, "x")
    (table,) = ablation_tables([RunResult.from_disk(runs / r.run_id / "result.json") for r in made])
    assert [x["name"] for x in table["rows"] if not x["paper"]] == ["v1 w/o alignment", "w/o alignment"]
    supersede(runs / old.run_id, new.run_id, "departed from the paper")
    (table,) = ablation_tables([RunResult.from_disk(runs / r.run_id / "result.json") for r in made])
    assert [x["name"] for x in table["rows"] if not x["paper"]] == ["w/o alignment"]
    after = RunResult.from_disk(runs / old.run_id / "result.json")
    assert after.metrics == old.metrics  # no number changes
    build_site([runs], tmp_path / "site")
    page = (tmp_path / "site" / "runs" / f"{old.run_id}.html").read_text()
    assert f'href="./{new.run_id}.html"' in page and "departed from the paper" in page


def _latency_report(models, ms, best, stats=None, rows=True):
    """A ``reasonrec bench latency`` report as it writes one (seconds, labels ``method:folder``)."""
    labels = [m.replace("=", ":", 1) for m, _ in models]
    rep = {"setup": {"dataset": "beauty", "users": 1000, "batch_size": 256, "beam_width": 50, "k": 20, "repeats": 3,
                     "torch_threads": 1, "models": [m for m, _ in models]},
           "seconds_per_sample": {lab: v / 1000 for lab, v in zip(labels, ms)},
           "ratio_to_first": {lab: v / ms[0] for lab, v in zip(labels, ms)},
           "min_seconds_per_sample": {lab: v / 1000 for lab, v in zip(labels, best)},
           "ratio_to_first_min": {lab: v / best[0] for lab, v in zip(labels, best)},
           "all_repeats": {lab: [v / 1000] * 3 for lab, v in zip(labels, ms)}, "stats": stats or {}}
    if rows:
        rep["rows"] = [{"label": lab, "method": m.partition("=")[0], "model": m.rstrip("/").split("/")[-2]
                        if m.endswith("/model") else m.split("/")[-1], "paper_row": row}
                       for lab, (m, row) in zip(labels, models)]
    return rep


def test_table4_side_by_side_reports_sit_beside_the_papers_ratios(tmp_path):
    """A latency report in a results folder's bench/ is shown under its dataset's Table 4: each timed model named
    as its row (linked) or as its stage entry, ms per sample (median, best), ratio to the first, and the paper's
    Table-4 row with its ms and ratio (published: MiniOneRec 0.27 s, LASAR 0.29, GREAM 7.0 on Beauty); a report
    without rows is left out and named; other bench JSON is not a latency report."""
    import json

    runs = tmp_path / "results"
    mini, lasar = fake_result("minionerec", "beauty", 0, 0.027), fake_result("lasar", "beauty", 0, 0.024)
    lasar.spec = lasar.spec.model_copy(update={"label": "LASAR (SFT+RL)"})
    lasar.run_id = lasar.spec.run_id()
    for r in (mini, lasar):
        r.to_disk(runs / "beauty" / r.run_id)
    models = [(f"minionerec=/elsewhere/{mini.run_id}/model", "MiniOneRec"),
              (f"lasar=/elsewhere/{lasar.run_id}/model", "LASAR"),
              ("gream=/cache/stages/cot-sft-0123", "Explicit CoT (GREAM), CoT generation")]
    (runs / "bench").mkdir()
    (runs / "bench" / "table4-beauty.json").write_text(json.dumps(_latency_report(
        models, [28.0, 30.8, 96.6], [27.0, 30.0, 90.0], {f"lasar:/elsewhere/{lasar.run_id}/model":
                                                           {"mean_latent_steps": 2.46}})))
    (runs / "bench" / "old-beauty.json").write_text(json.dumps(_latency_report(models, [1, 2, 3], [1, 2, 3], rows=False)))
    (runs / "bench" / "exact-beauty.json").write_text(json.dumps({"setup": {"dataset": "beauty"}, "agree": 99}))
    said = []
    index = build_site([runs], tmp_path / "site", log=said.append)
    p = Tables()
    p.feed(index.read_text())
    reports = [k for k in p.tables if k[0] == "latency-report"]
    assert reports == [("latency-report", "beauty")]
    head, *body = p.tables[reports[0]]
    assert [c for c, _ in head] == ["Model", "ms / sample", "Ratio", "Mean latent steps", "Paper's row", "Paper ms",
                                    "Paper ratio"]
    assert [[c for c, _ in row] for row in body] == [
        ["minionerec", "28.0 (27.0)", "1.00x (1.00x)", "", "MiniOneRec", "270", "1.00x"],
        ["LASAR (SFT+RL)", "30.8 (30.0)", "1.10x (1.11x)", "2.46", "LASAR", "290", "1.07x"],
        ["gream (cot-sft-0123)", "96.6 (90.0)", "3.45x (3.33x)", "", "Explicit CoT (GREAM), CoT generation", "7000",
         "25.93x"]]
    html = index.read_text()
    assert f'href="runs/{lasar.run_id}.html"' in html and "results/bench/table4-beauty.json" in html
    assert "old-beauty.json" not in html and any("old-beauty.json" in s and "upgrade" in s for s in said)


def test_upgrade_gives_older_latency_reports_their_rows(tmp_path):
    """`reasonrec upgrade` names each timed model of a latency report written before reports had rows: the run
    id (its config read from the result under the folder: GREAM's reasoning mode has the paper's CoT row, the
    direct mode none) or a stage entry (the method's defaults). No number changes; a second upgrade is a no-op."""
    import json

    from bench.latency import upgrade_latency_reports

    runs = tmp_path / "results"
    ids = {}
    for mode in ("reasoning", "direct"):
        r = fake_result("gream", "beauty", 0, 0.01, label=f"GREAM ({mode})")
        r.spec = r.spec.model_copy(update={"method_config": {"mode": mode}})
        r.run_id = ids[mode] = r.spec.run_id()
        r.to_disk(runs / "beauty" / r.run_id)
    models = [("minionerec=/root/.cache/reasonrec/stages/sft-1dc801c4ff85b845", ""),
              (f"gream=/work/x/{ids['reasoning']}/model", ""), (f"gream=/work/x/{ids['direct']}/model", "")]
    (runs / "bench").mkdir()
    old = _latency_report(models, [28.0, 90.0, 30.0], [27.0, 88.0, 29.0], rows=False)
    (runs / "bench" / "latency-gream-beauty.json").write_text(json.dumps(old))
    assert upgrade_latency_reports(runs, log=lambda *_: None) == 1
    new = json.loads((runs / "bench" / "latency-gream-beauty.json").read_text())
    assert [(r["method"], r["model"], r["paper_row"]) for r in new["rows"]] == [
        ("minionerec", "sft-1dc801c4ff85b845", "MiniOneRec"),
        ("gream", ids["reasoning"], "Explicit CoT (GREAM), CoT generation"), ("gream", ids["direct"], "")]
    assert [r["label"] for r in new["rows"]] == list(new["seconds_per_sample"])
    assert {k: v for k, v in new.items() if k != "rows"} == old
    assert upgrade_latency_reports(runs, log=lambda *_: None) == 0
    # the paper's LASAR row times the latent loop: the Stage-1-only ablation has no paper row
    from bench.registry import get_method

    lasar = get_method("lasar")
    assert lasar().paper_latency_row() == "LASAR" and lasar(lasar.Config(latent=False)).paper_latency_row() == ""


def test_a_model_re_made_from_a_committed_spec_for_timing_is_shown_as_that_row(tmp_path):
    """A model re-made from a committed row's spec only to be timed (`reasonrec run --config <its spec.json> --set
    eval.max_users=64`: another run id) is named on the site as that row, with its seed and the timed run's id,
    and linked to the row's page: its report row records what it was trained as (`trained_as`, from the
    result.json beside `model/`). The row ranked by the default protocol stands for an `evaluate` variant
    trained alike. A model trained otherwise (another seed) keeps its run id. `reasonrec upgrade` adds
    `trained_as` to an older report's rows while the timed run folders are there."""
    import json

    from bench.latency import report_row, trained_as, upgrade_latency_reports
    from bench.registry import get_method
    from bench.results import by_trained_as

    runs, lanes = tmp_path / "results", tmp_path / "lanes"
    row = fake_result("minionerec", "beauty", 1, 0.028, label="MiniOneRec (SFT+RL)")
    row.to_disk(runs / "beauty" / row.run_id)
    for b in range(1, 200):  # an `evaluate` variant of the row whose run id sorts first
        variant = row.model_copy(deep=True)
        variant.spec = row.spec.model_copy(update={"eval": row.spec.eval.model_copy(update={"batch_size": b})})
        variant.run_id = variant.spec.run_id()
        if variant.run_id < row.run_id:
            break
    variant.to_disk(runs / "beauty" / variant.run_id)
    remade = row.model_copy(deep=True)
    remade.spec = row.spec.model_copy(update={"eval": row.spec.eval.model_copy(update={"max_users": 64})})
    remade.run_id = remade.spec.run_id()
    other = fake_result("minionerec", "beauty", 2, 0.028, label="MiniOneRec (SFT+RL)")
    for r in (remade, other):
        r.to_disk(lanes / r.run_id)
        (lanes / r.run_id / "model").mkdir()
    assert len({row.run_id, variant.run_id, remade.run_id}) == 3
    committed = RunResult.from_disk(runs / "beauty" / row.run_id / "result.json")
    assert trained_as(lanes / remade.run_id / "model") == committed.trained_as()
    assert trained_as(lanes / other.run_id / "model") != committed.trained_as()  # the seed is part of it
    assert trained_as(tmp_path / "stages" / "sft-0123") is None  # a stage entry: no result beside it
    saved = [RunResult.from_disk(runs / "beauty" / i / "result.json") for i in (row.run_id, variant.run_id)]
    assert by_trained_as(saved)[committed.trained_as()].run_id == row.run_id

    models = [(f"minionerec={lanes / remade.run_id / 'model'}", "MiniOneRec"),
              (f"minionerec={lanes / other.run_id / 'model'}", "MiniOneRec")]
    rep = _latency_report(models, [28.0, 29.0], [27.0, 28.0])
    cls = get_method("minionerec")
    rep["rows"] = [report_row(spec, cls(cls.Config())) for spec, _ in models]
    (runs / "bench").mkdir()
    (runs / "bench" / "table4-beauty.json").write_text(json.dumps(rep))
    index = build_site([runs], tmp_path / "site")
    p = Tables()
    p.feed(index.read_text())
    _, *body = p.tables[("latency-report", "beauty")]
    assert [r[0][0] for r in body] == [
        f"MiniOneRec (SFT+RL), seed 1 (its spec re-made for timing: {remade.run_id})", f"minionerec ({other.run_id})"]
    assert f'href="runs/{row.run_id}.html"' in index.read_text().split("latency-report")[1]

    old = _latency_report(models, [28.0, 29.0], [27.0, 28.0])  # rows without trained_as
    (runs / "bench" / "table4-beauty.json").write_text(json.dumps(old))
    assert upgrade_latency_reports(runs, log=lambda *_: None) == 1
    new = json.loads((runs / "bench" / "table4-beauty.json").read_text())
    assert [r.get("trained_as") for r in new["rows"]] == [committed.trained_as(),
                                                         trained_as(lanes / other.run_id / "model")]
    assert {k: v for k, v in new.items() if k != "rows"} == {k: v for k, v in old.items() if k != "rows"}
    assert [{k: v for k, v in r.items() if k != "trained_as"} for r in new["rows"]] == old["rows"]
    assert upgrade_latency_reports(runs, log=lambda *_: None) == 0
    shutil.rmtree(lanes)  # the timed run folders gone: nothing to add, nothing breaks
    (runs / "bench" / "table4-beauty.json").write_text(json.dumps(old))
    assert upgrade_latency_reports(runs, log=lambda *_: None) == 0


def test_every_model_a_committed_table4_times_is_a_committed_row():
    """Each model a committed Table-4 report times is a committed row (its run id) or that row's spec re-made for
    timing: its ``trained_as`` names a committed row, and its run id is that row's spec with ``eval.max_users``
    64 (the results README's recipe), so the site names every Table-4 model by its row."""
    import json

    from bench.config import resolve_spec
    from bench.results import by_trained_as, load_results

    root = Path(__file__).parent.parent / "leaderboard" / "results"
    runs = load_results(root)
    by_id, made_as = {r.run_id: r for r in runs}, by_trained_as(runs)
    remade = 0
    for path in sorted(root.glob("bench/table4-*.json")):
        for row in json.loads(path.read_text())["rows"]:
            if row["model"] in by_id:
                continue
            assert row.get("trained_as") in made_as, (path.name, row["model"])
            r = made_as[row["trained_as"]]
            spec = json.loads((r.folder / "spec.json").read_text())
            spec["eval"]["max_users"] = 64
            assert resolve_spec(spec, check_files=False).run_id() == row["model"], (path.name, row["model"])
            remade += 1
    assert remade >= 4  # Beauty's and Instruments' MiniOneRec and LASAR


def test_a_renamed_setting_does_not_split_a_rows_seeds(tmp_path):
    """A seed committed before LASAR renamed ``latent_samples`` to ``cot_samples`` stores the old name: the site
    took it for another configuration (two Beauty "LASAR (SFT+RL) · <digest>" rows). `reasonrec upgrade` gives
    it the current name in result.json and spec.json; its run id (which hashes the old name) is unchanged, and
    the two seeds are one row."""
    import json

    from bench.rowfacts import upgrade_results
    from bench.summary import _group
    from bench.results import load_results

    runs = tmp_path / "results"
    for seed, name in ((0, "latent_samples"), (1, "cot_samples")):
        r = fake_result("lasar", "beauty", seed, 0.02 + seed / 1000, label="LASAR (SFT+RL)")
        r.spec = r.spec.model_copy(update={"method_config": {name: 8000}})
        r.method_facts["config"] = {name: 8000}
        r.run_id = r.spec.run_id()
        r.to_disk(runs / r.run_id)
        (runs / r.run_id / "spec.json").write_text(json.dumps(r.spec.model_dump(mode="json")))
    ids = sorted(p.name for p in runs.iterdir())
    assert len(_group(load_results(runs))["beauty"]) == 2  # the old name: two configurations
    assert upgrade_results(runs, log=lambda *_: None) == 1
    assert sorted(p.name for p in runs.iterdir()) == ids
    (rows,) = _group(load_results(runs))["beauty"].values()
    assert sorted(r.spec.seed for r in rows) == [0, 1] and all(r.spec.run_id() == r.run_id for r in rows)
    assert all("latent_samples" not in (runs / i / f).read_text() for i in ids for f in ("result.json", "spec.json"))
    assert upgrade_results(runs, log=lambda *_: None) == 0
