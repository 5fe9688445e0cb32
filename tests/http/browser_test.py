#!/usr/bin/env python3
"""The web page in a real browser (ctest: http_browser): Debian's chromium, headless, with a fake
microphone that plays a spoken question, talks to `slm serve` through the page served at `/`.

    .venv/bin/python tests/http/browser_test.py --slm build/cli/slm [--screenshot docs/images/http_page.png]

The page is loaded with `?autotalk=SECONDS` (it holds the talk button that long by itself); the test
reads the page's DOM through the DevTools protocol (a small CDP client over the `websockets`
package) until the final transcript and the answer are shown, checks the latency figures, and can
save a screenshot. Exits 77 (ctest SKIP_RETURN_CODE) when chromium, websockets or espeak-ng is
missing.
"""

import argparse
import asyncio
import audioop
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
SKIP = 77

try:
    import websockets
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(SKIP)


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def question_wav(folder, text):
    """The question at 16 kHz, then 1.5 s of silence (the fake microphone plays it once)."""
    raw = os.path.join(folder, "raw.wav")
    subprocess.run(["espeak-ng", "-w", raw, text], check=True, capture_output=True)
    with wave.open(raw, "rb") as w:
        frames, rate = w.readframes(w.getnframes()), w.getframerate()
    pcm, _ = audioop.ratecv(frames, 2, 1, rate, 16000, None)
    path = os.path.join(folder, "question.wav")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 4800 + pcm + b"\0\0" * 24000)
    return path, len(pcm) / 32000


class Cdp:
    """Enough of the Chrome DevTools protocol: commands on one page session."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.session = None

    async def call(self, method, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        await self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def drive(devtools, url, timeout, screenshot):
    async with websockets.connect(devtools, max_size=None) as ws:
        cdp = Cdp(ws)
        target = await cdp.call("Target.createTarget", url="about:blank")
        attached = await cdp.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        cdp.session = attached["sessionId"]
        await cdp.call("Emulation.setDeviceMetricsOverride", width=1000, height=860, deviceScaleFactor=1, mobile=False)
        await cdp.call("Page.enable")
        await cdp.call("Page.navigate", url=url)
        state = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = await cdp.evaluate(
                "({final: document.getElementById('final').textContent,"
                " answer: document.getElementById('answer').textContent,"
                " status: document.getElementById('status').textContent,"
                " token: document.getElementById('lat-token').textContent,"
                " history: document.getElementById('history').children.length})") or {}
            if state.get("final") and state.get("answer") and state.get("history", 0) > 0:
                break
            await asyncio.sleep(0.25)
        if screenshot:
            shot = await cdp.call("Page.captureScreenshot", format="png")
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        return state


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slm", required=True)
    parser.add_argument("--screenshot", default="", help="save a PNG of the page after the answer")
    parser.add_argument("--question", default="what is a dog")
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args()
    browser = chromium()
    if browser is None or not shutil.which("espeak-ng"):
        print("skipped: chromium or espeak-ng is not installed (scripts/setup installs both)")
        return SKIP
    folder = tempfile.mkdtemp(prefix="slm-browser-test-")
    server = browser_process = None
    try:
        wav, seconds = question_wav(folder, args.question)
        server = subprocess.Popen([os.path.abspath(args.slm), "serve", "--config", "samples/configs/serve.yaml",
                                   "--set", "listen=127.0.0.1:0", "--set", "http.listen=127.0.0.1:0"],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        http = None
        for line in server.stdout:
            if line.startswith("http on "):
                http = line.split()[2]
            if line.startswith("serving on "):
                break
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
        if http is None:
            print("FAIL: the server printed no 'http on' line")
            return 1
        # %noloop: the fake microphone plays the file once, then silence.
        browser_process = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop",
             "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
             f"--user-data-dir={os.path.join(folder, 'profile')}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        devtools = None
        for line in browser_process.stderr:
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                devtools = match.group(1)
                break
        threading.Thread(target=lambda: [None for _ in browser_process.stderr], daemon=True).start()
        if devtools is None:
            print("FAIL: chromium did not start its DevTools endpoint")
            return 1
        url = f"http://{http}/?autotalk={seconds + 1.2:.1f}"
        state = asyncio.run(drive(devtools, url, args.timeout, args.screenshot))
        print(json.dumps(state))
        ok = bool(state.get("final")) and bool(state.get("answer")) and state.get("token", "-") != "-"
        print("PASS" if ok else "FAIL: the page showed no transcript and answer")
        return 0 if ok else 1
    finally:
        for p in (browser_process, server):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
