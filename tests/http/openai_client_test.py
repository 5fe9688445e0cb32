#!/usr/bin/env python3
"""The OpenAI-compatible HTTP API of a real `slm serve`, through real clients (ctest: http_openai_client).

    .venv/bin/python tests/http/openai_client_test.py --slm build/cli/slm [unittest args]

Starts `slm serve --config samples/configs/serve.yaml` with the HTTP front-end on a free port and a
bearer token, speaks a question with espeak-ng, and checks with the official `openai` package
(transcriptions in every response format, streamed and not; chat completions with audio input,
streamed and not; speech; errors) and the `websockets` package (the realtime endpoint, audio in
20 ms chunks at real time) that the answers equal the gRPC API's for the same audio and settings
(taken with `slm client`, which speaks gRPC, from the same server). Also TLS with the server's
certificate and draining on SIGTERM. Exits 77 (ctest SKIP_RETURN_CODE) when openai, websockets or
espeak-ng is missing.
"""

import argparse
import asyncio
import audioop
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import wave

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
SKIP = 77
TOKEN = "http-test-token"
QUESTION = "what is a dog"
SLM = None  # set in main()

try:
    import openai
    import websockets
except ImportError as e:
    print(f"skipped: {e} (scripts/setup installs openai and websockets into .venv)")
    sys.exit(SKIP)


class ServerProcess:
    """`slm serve` in a subprocess; start() waits for its "http on" and "serving on" lines."""

    def __init__(self, *sets):
        self.sets = ("listen=127.0.0.1:0", "http.listen=127.0.0.1:0", f"auth.token={TOKEN}") + sets
        self.process = None
        self.grpc = None
        self.http = None
        self.lines = []
        self.log = tempfile.NamedTemporaryFile(prefix="slm-serve-", suffix=".log", delete=False)

    def start(self, timeout=90):
        command = [SLM, "serve", "--config", "samples/configs/serve.yaml"]
        for s in self.sets:
            command += ["--set", s]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready = threading.Event()

        def read_stdout():
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("http on "):
                    self.http = line.split()[2]
                if line.startswith("serving on "):
                    self.grpc = line.split()[2]
                    ready.set()
            ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        if not ready.wait(timeout) or self.grpc is None:
            log = open(self.log.name, errors="replace").read()[-3000:]
            self.stop()
            raise AssertionError(f"no 'serving on' line within {timeout} s; server log:\n{log}")
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if os.path.exists(self.log.name):
            os.unlink(self.log.name)


def slm_client(*args):
    """`slm client ... --json` (gRPC) -> its JSON report."""
    out = subprocess.run([SLM, "--json", "client", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


class Audio:
    folder = None
    wav = None  # 16 kHz mono 16-bit: the question, then 0.8 s of silence (for endpointing)
    pcm = None

    @classmethod
    def make(cls):
        if cls.folder is not None:
            return
        cls.folder = tempfile.mkdtemp(prefix="slm-http-test-")
        if not shutil.which("espeak-ng"):
            return
        raw = os.path.join(cls.folder, "raw.wav")
        subprocess.run(["espeak-ng", "-w", raw, QUESTION], check=True, capture_output=True)
        with wave.open(raw, "rb") as w:
            frames, rate = w.readframes(w.getnframes()), w.getframerate()
        pcm, _ = audioop.ratecv(frames, 2, 1, rate, 16000, None)
        cls.pcm = pcm + b"\0\0" * 12800
        cls.wav = os.path.join(cls.folder, "question.wav")
        with wave.open(cls.wav, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(cls.pcm)


class OpenAiClientTest(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        Audio.make()
        if Audio.wav is None:
            raise unittest.SkipTest("espeak-ng is not installed")
        cls.server = ServerProcess().start()
        cls.client = openai.OpenAI(base_url=f"http://{cls.server.http}/v1", api_key=TOKEN, max_retries=0)
        grpc = ["--server", cls.server.grpc, "--token", TOKEN, "--audio", Audio.wav]
        cls.grpc_transcript = slm_client("transcribe", *grpc)["transcript"]
        cls.grpc_answer = slm_client("stream", *grpc, "--task", "respond", "--endpointing-ms", "-1", "--encoding", "float32",
                                     "--max-answer-tokens", "16")["answer"]
        cls.grpc_stream = slm_client("stream", *grpc, "--endpointing-ms", "0", "--encoding", "float32")
        cls.grpc_respond = slm_client("stream", *grpc, "--task", "respond", "--endpointing-ms", "0", "--encoding", "float32",
                                      "--max-answer-tokens", "16")

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            cls.server.stop()

    def test_serve_prints_the_http_address_before_serving_on(self):
        http_line = next(i for i, l in enumerate(self.server.lines) if l.startswith("http on "))
        serving_line = next(i for i, l in enumerate(self.server.lines) if l.startswith("serving on "))
        self.assertLess(http_line, serving_line)

    def test_models(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, ["tiny", "sqa", "tts"])

    def test_transcriptions_in_every_format_equal_grpc(self):
        self.assertTrue(self.grpc_transcript)
        with open(Audio.wav, "rb") as f:
            result = self.client.audio.transcriptions.create(model="tiny", file=f)
        self.assertEqual(result.text, self.grpc_transcript)
        with open(Audio.wav, "rb") as f:
            text = self.client.audio.transcriptions.create(model="tiny", file=f, response_format="text")
        self.assertEqual(text.strip(), self.grpc_transcript)
        with open(Audio.wav, "rb") as f:
            verbose = self.client.audio.transcriptions.create(model="tiny", file=f, response_format="verbose_json",
                                                              timestamp_granularities=["word", "segment"])
        self.assertEqual(verbose.text, self.grpc_transcript)
        self.assertEqual(" ".join(w.word for w in verbose.words), self.grpc_transcript)
        self.assertTrue(all(w.end >= w.start for w in verbose.words))
        self.assertGreater(verbose.duration, 1.0)
        for fmt, head in (("srt", "1\n00:00:"), ("vtt", "WEBVTT\n\n00:00:")):
            with open(Audio.wav, "rb") as f:
                subtitles = self.client.audio.transcriptions.create(model="tiny", file=f, response_format=fmt)
            self.assertTrue(subtitles.startswith(head), subtitles)
            self.assertIn(" --> ", subtitles)
        with open(Audio.wav, "rb") as f:
            events = list(self.client.audio.transcriptions.create(model="tiny", file=f, stream=True))
        deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
        done = [e for e in events if e.type == "transcript.text.done"]
        self.assertEqual("".join(deltas), self.grpc_transcript)
        self.assertEqual(len(done), 1)
        self.assertEqual(done[0].text, self.grpc_transcript)

    def audio_message(self, fmt="wav"):
        with open(Audio.wav, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": fmt}}]}]

    def test_chat_completion_with_audio_equals_grpc_respond(self):
        self.assertTrue(self.grpc_answer)
        completion = self.client.chat.completions.create(model="sqa", max_tokens=16, messages=self.audio_message())
        self.assertEqual(completion.choices[0].message.content, self.grpc_answer)
        self.assertIn(completion.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(completion.usage.completion_tokens, 0)
        stream = self.client.chat.completions.create(model="sqa", max_tokens=16, messages=self.audio_message(), stream=True,
                                                     stream_options={"include_usage": True})
        pieces, usage = [], None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        self.assertEqual("".join(pieces), self.grpc_answer)
        self.assertEqual(usage.completion_tokens, completion.usage.completion_tokens)

    def test_chat_completion_of_text_with_sampling_settings(self):
        a = self.client.chat.completions.create(model="tiny", max_tokens=8, temperature=0.8, top_p=0.9, seed=11,
                                                messages=[{"role": "user", "content": "a dog is"}])
        b = self.client.chat.completions.create(model="tiny", max_tokens=8, temperature=0.8, top_p=0.9, seed=11,
                                                messages=[{"role": "user", "content": "a dog is"}])
        self.assertTrue(a.choices[0].message.content)
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)  # same seed, same answer

    def test_speech_from_the_embedded_voice(self):
        # serve.yaml serves the spoken dictionary's voice; a server without one answers 400 "no speech
        # synthesizer" (tests/http/errors_test.cpp).
        wav = self.client.audio.speech.create(model="tiny", voice="default", input="a dog barks",
                                              response_format="wav").content
        self.assertEqual(wav[:4], b"RIFF")
        self.assertGreater(len(wav), 44 + 2 * 16000 // 4)  # more than a quarter second of 16-bit audio
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.audio.speech.create(model="tiny", voice="default", input="a dog barks", response_format="mp3")
        self.assertIn("not supported", str(caught.exception))

    def test_errors_are_openai_errors(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            self.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(caught.exception.code, "model_not_found")
        bad = openai.OpenAI(base_url=f"http://{self.server.http}/v1", api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.models.list()
        messages = self.audio_message()
        messages[0]["content"][0]["input_audio"]["data"] = "UklGR%%%"
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.chat.completions.create(model="sqa", messages=messages)
        self.assertEqual(caught.exception.code, "invalid_base64")
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.audio.transcriptions.create(model="tiny", file=("notes.txt", b"not audio", "text/plain"))
        self.assertEqual(caught.exception.code, "invalid_audio")

    async def realtime(self, session, chunk_ms=20, extra_events=()):
        """Streams the question at real time in `chunk_ms` pieces; returns every server event."""
        uri = f"ws://{self.server.http}/v1/realtime"
        events = []
        async with websockets.connect(uri, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None) as ws:
            events.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "session.update", "session": session}))
            for e in extra_events:
                await ws.send(json.dumps(e))
            step = 16000 * 2 * chunk_ms // 1000
            start = time.monotonic()
            for i, at in enumerate(range(0, len(Audio.pcm), step)):
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(Audio.pcm[at:at + step]).decode()}))
                await asyncio.sleep(max(0.0, start + (i + 1) * chunk_ms / 1000 - time.monotonic()))
            want = "response.done" if session.get("type") == "realtime" else "conversation.item.input_audio_transcription.completed"
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                events.append(event)
                if event["type"] == want:
                    return events

    def test_realtime_transcripts_in_order_equal_grpc(self):
        events = asyncio.run(self.realtime({"type": "transcription",
                                            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                                                                "turn_detection": {"type": "server_vad"}}}},
                                           extra_events=[{"type": "input_audio_buffer.dance", "event_id": "x1"}]))
        types = [e["type"] for e in events]
        self.assertEqual(types[0], "session.created")
        self.assertIn("session.updated", types)
        errors = [e for e in events if e["type"] == "error"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["error"]["code"], "unknown_event")
        self.assertEqual(errors[0]["error"]["event_id"], "x1")
        deltas = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
        self.assertGreater(len(deltas), 0, "no interim transcripts")
        ends = [d["audio_end_ms"] for d in deltas]
        self.assertEqual(ends, sorted(ends))
        final = events[-1]
        self.assertEqual(final["transcript"], self.grpc_stream["transcript"])
        self.assertEqual(final["end_reason"], "endpoint")
        appended = "".join(d["delta"] for d in deltas)
        self.assertTrue(final["transcript"].startswith(appended), (appended, final["transcript"]))
        self.assertLess(types.index("input_audio_buffer.speech_started"), types.index("input_audio_buffer.committed"))
        self.assertLess(types.index("input_audio_buffer.committed"), len(types) - 1)

    def test_realtime_answers_equal_grpc_respond(self):
        events = asyncio.run(self.realtime({"type": "realtime", "model": "sqa", "max_output_tokens": 16}))
        completed = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
        self.assertEqual(completed[0]["transcript"], self.grpc_respond["transcript"])
        answer = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        self.assertEqual(answer, self.grpc_respond["answer"])
        self.assertEqual(events[-1]["response"]["output"][0]["content"][0]["text"], answer)


class TlsAndDrainTest(unittest.TestCase):
    def test_tls_then_drain_on_sigterm(self):
        if not shutil.which("openssl"):
            self.skipTest("no openssl command")
        folder = tempfile.mkdtemp(prefix="slm-http-tls-")
        key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        server = ServerProcess(f"tls.cert={cert}", f"tls.key={key}").start()
        try:
            self.assertTrue(any(l.startswith("http on ") and "(https, wss)" in l for l in server.lines), server.lines)
            client = openai.OpenAI(base_url=f"https://{server.http}/v1", api_key=TOKEN, max_retries=0,
                                   http_client=openai.DefaultHttpxClient(verify=cert))
            self.assertEqual([m.id for m in client.models.list()], ["tiny", "sqa", "tts"])
            plain = openai.OpenAI(base_url=f"http://{server.http}/v1", api_key=TOKEN, max_retries=0, timeout=5)
            with self.assertRaises(openai.APIConnectionError):
                plain.models.list()
            server.process.send_signal(signal.SIGTERM)
            self.assertEqual(server.process.wait(30), 0)
            time.sleep(0.2)
            self.assertTrue(any(l.startswith("drained") for l in server.lines), server.lines)
        finally:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)


def main():
    global SLM
    parser = argparse.ArgumentParser()
    parser.add_argument("--slm", required=True)
    args, rest = parser.parse_known_args()
    SLM = os.path.abspath(args.slm)
    result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    if Audio.folder:
        shutil.rmtree(Audio.folder, ignore_errors=True)
    if not result.wasSuccessful():
        sys.exit(1)
    sys.exit(SKIP if result.skipped and not result.testsRun - len(result.skipped) else 0)


if __name__ == "__main__":
    main()
