"""The dashboard in real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium): finished runs and studies render, and the page's controls act on a live run.
Screenshots are saved under pytest's temporary folder (the path is printed) for a person."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from caviar.watch import Dashboard

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")
ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(predicate, seconds=60):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # the page is being redrawn: try again
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting ({last})")


def read(path):
    with open(path) as f:
        return json.load(f)


def caviar(*args):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=300)


def series(driver):
    return driver.find_elements("css selector", "svg path.series")


def test_page_shows_a_finished_run_and_a_finished_study(browser, tmp_path):
    assert caviar("train", "--data", "digits", "--epochs", "8", "--quiet", "--out", tmp_path / "run").returncode == 0
    (tmp_path / "space.yaml").write_text("lr: {log_uniform: [0.001, 0.03]}\nbeta1: {one_minus_log_uniform: [0.8, 0.99]}\n")
    r = caviar("tune", "--data", "iris", "--trials", "8", "--epochs", "4", "--strategy", "coarse-to-fine", "--rounds", "2",
               "--group-size", "1", "--space", tmp_path / "space.yaml", "--study", tmp_path / "study.sqlite", "--out",
               tmp_path / "tune", "--json")
    assert r.returncode == 0, r.stderr
    dashboard = Dashboard([tmp_path / "run", tmp_path / "study.sqlite"], port=0)
    base = dashboard.start()
    try:
        browser.get(base + "run/run")
        wait_for(lambda: len(series(browser)) >= 3)  # cost, train and dev metric (and lr, norms)
        titles = [e.get_attribute("data-title") for e in browser.find_elements("css selector", "svg")]
        assert "cost per iteration" in titles and "gradient norms per layer" in titles
        assert "finished" in browser.find_element("id", "status").text
        assert not browser.find_elements("id", "set-lr")  # no controls on a finished run
        browser.save_screenshot(str(tmp_path / "dashboard-run.png"))

        browser.get(base + "study/study")
        wait_for(lambda: len(browser.find_elements("css selector", "#leaderboard tr")) == 10)  # 8 trials, the ensemble
        ensemble = browser.find_element("id", "ensemble-row").text
        members = json.loads(r.stdout)["ensemble"]["members"]
        assert f"{len(members)} of 8 trials" in ensemble and str(members[0]) in ensemble
        titles = [e.get_attribute("data-title") for e in browser.find_elements("css selector", "svg")]
        assert any("1 - beta1" in t and "log scale" in t for t in titles)
        assert browser.find_elements("css selector", "svg rect")  # the round-1 boxes
        browser.save_screenshot(str(tmp_path / "dashboard-study.png"))
        print(f"screenshots: {tmp_path / 'dashboard-run.png'} {tmp_path / 'dashboard-study.png'}")
        assert (tmp_path / "dashboard-run.png").stat().st_size > 10000

        # queued trials (pending: no worker has started them) and running ones are shown apart
        shutil.copy(tmp_path / "study.sqlite", tmp_path / "busy.sqlite")
        conn = sqlite3.connect(tmp_path / "busy.sqlite")
        conn.execute("UPDATE trials SET status = 'running' WHERE number = 6")
        conn.execute("UPDATE trials SET status = 'pending', value = NULL WHERE number > 6")
        conn.commit()
        conn.close()
        dashboard.add(tmp_path / "busy.sqlite")
        browser.get(base + "study/busy")
        wait_for(lambda: browser.find_elements("id", "queued"))
        assert browser.find_element("id", "running").text == "1 running"
        assert browser.find_element("id", "queued").text == "2 queued"
        assert "5 of 8 trials finished" in browser.find_element("id", "study-status").text

        browser.get(base + "run/nothing")
        assert "nothing is watched under the name 'nothing'" in browser.page_source
    finally:
        dashboard.stop()


def test_controls_on_the_page_act_on_a_live_run(browser, tmp_path):
    out = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-m", "caviar", "train", "--data", "digits", "--epochs", "5000", "--no-early-stopping", "--quiet",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    dashboard = None
    try:
        wait_for(lambda: read(out / "state.json")["iteration"] > 30)
        dashboard = Dashboard([out], port=0)
        browser.get(dashboard.start() + "run/live")
        wait_for(lambda: browser.find_element("id", "set-lr").is_displayed())

        def click(button_id, expect):
            browser.find_element("id", button_id).click()
            wait_for(lambda: expect in browser.find_element("id", "message").text)

        browser.find_element("id", "lr").send_keys("0.0003")
        click("set-lr", "learning rate 0.0003")
        click("pause", "paused")
        held = read(out / "state.json")["iteration"]
        time.sleep(1.0)
        assert read(out / "state.json")["iteration"] == held  # pause stops iterations advancing
        live = read(out / "live.json")
        k = next(e for e in live["events"] if e["event"] == "set-lr")["iteration"]
        assert live["lrs"][k - 1] == pytest.approx(0.001) and live["lrs"][k] == pytest.approx(0.0003)

        click("resume", "resumed")
        wait_for(lambda: read(out / "state.json")["iteration"] > held + 10)  # resume continues them
        click("checkpoint", "checkpoint at iteration")
        first = read(out / "live.json")["checkpoints"][0]
        wait_for(lambda: read(out / "state.json")["iteration"] > first + 20)
        click("pause", "paused")
        wait_for(lambda: browser.find_elements("css selector", f"#rollback-to option[value='{first}']"))
        option = browser.find_element("css selector", f"#rollback-to option[value='{first}']")
        option.click()
        time.sleep(2.5)  # two refreshes of the page: the list is not rebuilt under the user's choice
        assert option.is_selected()
        click("rollback", "rolled back to the checkpoint of iteration")
        click("checkpoint", "checkpoint at iteration")
        second = read(out / "live.json")["checkpoints"][-1]
        a = np.load(out / "checkpoints" / f"iter-{first:06d}" / "arrays.npz")
        b = np.load(out / "checkpoints" / f"iter-{second:06d}" / "arrays.npz")
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # rollback restores the weights exactly
        browser.save_screenshot(str(tmp_path / "dashboard-live.png"))
        wait_for(lambda: len(browser.find_elements("css selector", "line.event")) >= 4)  # actions marked on the curves
        browser.find_element("id", "stop").click()  # the run ends, and the page drops its controls
        assert proc.wait(60) == 0
        assert read(out / "state.json")["status"] == "stopped"
        wait_for(lambda: "stopped" in browser.find_element("id", "status").text and not browser.find_elements("id", "stop"))
    finally:
        if dashboard is not None:
            dashboard.stop()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
