#!/usr/bin/python3
"""End-to-end test of slm_client.py against a real `slm serve` (ctest: python_client).

    /usr/bin/python3 samples/clients/python/test_client.py --slm build/cli/slm [unittest args]

Starts `slm serve --config samples/configs/serve.yaml` on a free port with a bearer token, speaks a
question with espeak-ng and checks health, reflection, ListModels, Converse (RESPOND, LINEAR16 and
FLOAT32, request ids, word times), Transcribe, authentication, a malformed stream, the command line,
and draining on SIGTERM. Exits 77 (ctest SKIP_RETURN_CODE) when grpcio, protobuf or protoc are
missing, or when tests were skipped because espeak-ng is.
"""

import argparse
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
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
SKIP = 77
TOKEN = "py-client-test-token"
QUESTION = "what is a dog"
SLM = None  # set in main()

try:
    import grpc
    import slm_client
except ImportError as e:  # not Debian's python3, or python3-grpcio / python3-protobuf missing
    print(f"skipped: {e} (run with /usr/bin/python3; apt install python3-grpcio python3-protobuf)")
    sys.exit(SKIP)


class ServerProcess:
    """`slm serve` in a subprocess on 127.0.0.1:0; start() waits for its "serving on" line."""

    def __init__(self, *sets):
        # The HTTP front-end is tested elsewhere (tests/http); here it stays off, so that servers
        # started side by side never compete for serve.yaml's HTTP port.
        self.sets = ("listen=127.0.0.1:0", "http.listen=", f"auth.token={TOKEN}") + sets
        self.process = None
        self.address = None
        self.stdout_lines = []
        self.log = tempfile.NamedTemporaryFile(prefix="slm-serve-", suffix=".log", delete=False)

    def start(self, timeout=60):
        command = [SLM, "serve", "--config", "samples/configs/serve.yaml"]
        for s in self.sets:
            command += ["--set", s]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready = threading.Event()

        def read_stdout():  # keeps draining the pipe so the server never blocks on it
            for line in self.process.stdout:
                self.stdout_lines.append(line.rstrip("\n"))
                if line.startswith("serving on "):
                    self.address = line.split()[2]
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read_stdout, daemon=True)
        self.reader.start()
        if not ready.wait(timeout) or self.address is None:
            log = self.log_tail()
            self.stop()
            raise AssertionError(f"no 'serving on' line within {timeout} s; server log:\n{log}")
        return self

    def log_tail(self, lines=30):
        with open(self.log.name, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None:
            self.process.stdout.close()
        if os.path.exists(self.log.name):
            os.unlink(self.log.name)


def speak(text, path):
    """espeak-ng -> a 22050 Hz 16-bit mono WAV; returns its duration in seconds."""
    subprocess.run(["espeak-ng", "-w", path, text], check=True, capture_output=True)
    with wave.open(path, "rb") as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (22050, 2, 1), w.getparams()
        return w.getnframes() / w.getframerate()


class AudioFixture:
    """A temporary folder with the spoken question (tests that need it skip without espeak-ng)."""

    folder = None
    wav = None
    seconds = None

    @classmethod
    def make(cls):
        if cls.folder is None:
            cls.folder = tempfile.mkdtemp(prefix="slm-client-test-")
            if shutil.which("espeak-ng"):
                cls.wav = os.path.join(cls.folder, "question.wav")
                cls.seconds = speak(QUESTION, cls.wav)

    @classmethod
    def require(cls, test):
        cls.make()
        if cls.wav is None:
            test.skipTest("espeak-ng is not installed")
        return cls.wav


def code_of(call):
    """Runs call(); returns the grpc.StatusCode it failed with (OK when it did not)."""
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


class AudioBytesTest(unittest.TestCase):
    """The client's audio conversions, without a server."""

    def test_encodings_round_trip(self):
        samples = [0.0, 0.5, -0.5, 0.999, -1.0, 0.123456]
        back = slm_client.decode_samples(slm_client.encode_samples(samples, "float32"), 2)
        for a, b in zip(samples, back):
            self.assertAlmostEqual(a, b, places=6)
        back16 = slm_client.decode_samples(slm_client.encode_samples(samples, "linear16"), 1)
        self.assertEqual(len(back16), len(samples))
        for a, b in zip(samples, back16):
            self.assertAlmostEqual(a, b, delta=1.0 / 32768)

    def test_wav_round_trip(self):
        path = os.path.join(tempfile.mkdtemp(prefix="slm-wav-"), "x.wav")
        samples = [0.25 * ((i % 40) / 20.0 - 1.0) for i in range(800)]
        slm_client.write_wav(path, samples, 22050)
        back, rate = slm_client.read_wav(path)
        self.assertEqual(rate, 22050)
        self.assertEqual(len(back), len(samples))
        self.assertLess(max(abs(a - b) for a, b in zip(samples, back)), 1.0 / 32768 + 1e-9)


class ServerTest(unittest.TestCase):
    """Everything but draining, against one server."""

    @classmethod
    def setUpClass(cls):
        cls.server = ServerProcess()
        cls.addClassCleanup(cls.server.stop)  # runs even when start() or a test fails
        cls.server.start()
        cls.channel = slm_client.make_channel(cls.server.address)
        cls.addClassCleanup(cls.channel.close)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_health(self):
        self.assertEqual(slm_client.health_check(self.channel, ""), "SERVING")
        self.assertEqual(slm_client.health_check(self.channel, "slm.v1.Speech"), "SERVING")
        raw = self.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
        self.assertEqual(raw(b"\x0a\x0dslm.v1.Speech", timeout=10), b"\x08\x01")

    def test_reflection(self):
        self.assertIn("slm.v1.Speech", slm_client.list_services(self.channel))

    def test_list_models(self):
        response = slm_client.list_models(self.channel, token=TOKEN)
        models = {m.name: m for m in response.models}
        self.assertIn("tiny", models)
        self.assertTrue(models["tiny"].accepts_audio)
        adapters = {a.name: list(a.tasks) for a in models["tiny"].adapters}
        self.assertIn("sqa", adapters)
        self.assertIn("sqa", adapters["sqa"])

    def check_respond(self, result, request_id=None):
        wav_seconds = AudioFixture.seconds
        responses = result["responses"]
        self.assertTrue(responses)
        ids = {r["request_id"] for r in responses}
        self.assertEqual(len(ids), 1, f"request ids differ across responses: {ids}")
        self.assertTrue(ids.pop())
        if request_id is not None:
            self.assertEqual(result["request_id"], request_id)
        self.assertGreaterEqual(len(result["finals"]), 1)
        for entry in result["finals"]:
            final = entry["final_transcript"]
            self.assertTrue(final["is_final"])
            words = final["words"]
            self.assertGreaterEqual(len(words), 1, f"no words in {final}")
            self.assertEqual(" ".join(w["word"] for w in words), final["text"])
            previous_end = 0.0
            for w in words:
                self.assertGreaterEqual(w["start_seconds"], previous_end, f"word times not increasing: {words}")
                self.assertLessEqual(w["start_seconds"], w["end_seconds"], f"word ends before it starts: {w}")
                self.assertLessEqual(w["end_seconds"], wav_seconds + 1e-3, f"word after the audio's end: {w}")
                previous_end = w["end_seconds"]
            self.assertLessEqual(final["end_seconds"], wav_seconds + 0.05)
        self.assertGreaterEqual(len(result["answer_tokens"]), 1)
        self.assertEqual([t["answer_token"]["index"] for t in result["answer_tokens"]],
                         list(range(len(result["answer_tokens"]))))
        self.assertEqual(len(result["summaries"]), 1)
        summary = result["summaries"][0]["summary"]
        self.assertEqual(summary["tokens_generated"], len(result["answer_tokens"]))
        self.assertEqual(summary["adapter"], "sqa")
        self.assertEqual(summary["model"], "tiny")
        self.assertAlmostEqual(summary["audio_seconds_processed"], wav_seconds, delta=0.01)
        self.assertIsNotNone(result["final_latency_ms"])
        self.assertIsNotNone(result["first_answer_token_latency_ms"])
        # Order: finals before answer tokens before the summary.
        kinds = [r["kind"] for r in responses]
        self.assertEqual(kinds[-1], "summary")
        self.assertLess(kinds.index("final_transcript"), kinds.index("answer_token"))

    def test_respond_linear16_and_float32(self):
        wav = AudioFixture.require(self)
        linear16 = slm_client.stream_file(self.channel, wav, task="respond", encoding="linear16", interim=True,
                                          request_id="py-linear16", token=TOKEN, timeout=30)
        self.check_respond(linear16, "py-linear16")
        float32 = slm_client.stream_file(self.channel, wav, task="respond", encoding="float32",
                                         request_id="py-float32", token=TOKEN, timeout=30)
        self.check_respond(float32, "py-float32")
        # The same 16-bit samples either way: the server decodes both to equal floats.
        self.assertEqual(float32["transcript"], linear16["transcript"])

    def test_server_assigns_request_id(self):
        wav = AudioFixture.require(self)
        result = slm_client.stream_file(self.channel, wav, task="respond", token=TOKEN, timeout=30)
        self.check_respond(result)
        self.assertTrue(result["request_id"])

    def test_transcribe_file(self):
        wav = AudioFixture.require(self)
        response = slm_client.transcribe_file(self.channel, wav, token=TOKEN)
        self.assertTrue(response.transcript.text)
        self.assertAlmostEqual(response.audio_seconds, AudioFixture.seconds, delta=0.01)
        self.assertTrue(response.request_id)

    def test_unauthenticated(self):
        self.assertEqual(code_of(lambda: slm_client.list_models(self.channel)), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(code_of(lambda: slm_client.list_models(self.channel, token="wrong")),
                         grpc.StatusCode.UNAUTHENTICATED)
        # Converse: a stream without a token fails before any response.
        self.assertEqual(code_of(lambda: slm_client.stream_audio(self.channel, [0.0] * 1600, 16000, timeout=10)),
                         grpc.StatusCode.UNAUTHENTICATED)

    def test_synthesize_with_the_embedded_voice(self):
        # serve.yaml serves the spoken dictionary's voice (an adapter with task tts).
        said = slm_client.synthesize(self.channel, "a small dog", token=TOKEN, timeout=60)
        self.assertGreater(said["chunks"], 0)
        self.assertEqual(said["sample_rate"], 16000)
        seconds = len(said["samples"]) / said["sample_rate"]
        self.assertGreater(seconds, 0.3)
        self.assertAlmostEqual(said["summary"]["audio_seconds"], seconds, delta=0.01)
        self.assertTrue(all(-1.0 <= x <= 1.0 for x in said["samples"]))
        out = os.path.join(tempfile.mkdtemp(prefix="slm-synth-"), "x.wav")
        done = self.run_cli("synthesize", "--text", "hello", "--out", out, "--token", TOKEN)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(4), b"RIFF")
        # Text with nothing to say is the client's error, named as such.
        with self.assertRaises(grpc.RpcError) as caught:
            slm_client.synthesize(self.channel, "   ", token=TOKEN, timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_audio_before_config(self):
        pb2 = slm_client.load_pb2()
        converse = slm_client.converse_call(self.channel)
        requests = iter([pb2.ConverseRequest(audio=b"\x00\x00" * 160)])
        with self.assertRaises(grpc.RpcError) as caught:
            list(converse(requests, metadata=slm_client.auth_metadata(TOKEN), timeout=10))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("config", caught.exception.details())

    def run_cli(self, *args):
        env = {k: v for k, v in os.environ.items() if k != "SLM_TOKEN"}  # tokens only from the arguments
        return subprocess.run([sys.executable, os.path.join(HERE, "slm_client.py"), *args,
                               "--server", self.server.address], capture_output=True, text=True, timeout=60, env=env)

    def test_cli(self):
        wav = AudioFixture.require(self)
        done = self.run_cli("stream", "--audio", wav, "--task", "respond", "--token", TOKEN, "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)  # exactly one JSON object
        self.assertTrue(report["transcript"])
        self.assertTrue(report["answer"])
        done = self.run_cli("stream", "--audio", wav, "--task", "respond", "--interim", "--token", TOKEN)
        self.assertEqual(done.returncode, 0, done.stderr)
        for marker in ("final     ", "words: ", "answer    ", "summary   utterance 0", "transcript: "):
            self.assertIn(marker, done.stdout)
        done = self.run_cli("models", "--token", TOKEN)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("adapter sqa", done.stdout)
        done = self.run_cli("health")
        self.assertEqual((done.returncode, done.stdout.strip()), (0, "SERVING"))
        done = self.run_cli("models")
        self.assertEqual(done.returncode, 1)
        self.assertTrue(done.stderr.startswith("error: UNAUTHENTICATED: "), done.stderr)


class DrainTest(unittest.TestCase):
    """SIGTERM: health NOT_SERVING, new calls UNAVAILABLE, a stream already running completes, exit 0."""

    DRAIN_SECONDS = 10  # samples/configs/serve.yaml

    def setUp(self):
        self.server = ServerProcess(f"drain_seconds={self.DRAIN_SECONDS}")
        self.addCleanup(self.server.stop)
        self.server.start()
        self.channel = slm_client.make_channel(self.server.address)
        self.addCleanup(self.channel.close)

    def tearDown(self):
        self.server.stop()

    def test_sigterm_completes_running_stream(self):
        wav = AudioFixture.require(self)
        # A non-realtime stream of the short question that holds back its audio after ~0.5 s until the
        # server has answered with an interim (so it is certainly running) and SIGTERM has been sent.
        admitted, release = threading.Event(), threading.Event()
        outcome = {}

        def on_response(entry):
            admitted.set()

        def before_chunk(index, audio_end):
            if audio_end > 0.5 and not release.is_set():
                release.wait(20)

        def stream():
            try:
                outcome["result"] = slm_client.stream_file(
                    self.channel, wav, task="respond", interim=True, chunk_ms=80, request_id="py-drain",
                    token=TOKEN, timeout=30, on_response=on_response, before_chunk=before_chunk)
            except grpc.RpcError as e:
                outcome["error"] = (e.code(), e.details())
            finally:
                admitted.set()

        thread = threading.Thread(target=stream, daemon=True)
        thread.start()
        try:
            self.assertTrue(admitted.wait(15), "no interim transcript within 15 s")
            self.assertNotIn("error", outcome)
            self.server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Draining: health turns NOT_SERVING, new calls are refused with UNAVAILABLE.
            status = None
            while time.monotonic() - signalled < 3:
                status = slm_client.health_check(self.channel, "slm.v1.Speech")
                if status == "NOT_SERVING":
                    break
                time.sleep(0.02)
            self.assertEqual(status, "NOT_SERVING")
            self.assertEqual(slm_client.health_check(self.channel, ""), "NOT_SERVING")
            self.assertEqual(code_of(lambda: slm_client.list_models(self.channel, token=TOKEN)),
                             grpc.StatusCode.UNAVAILABLE)
            self.assertIsNone(self.server.process.poll(), "the server exited while a stream was running")
        finally:
            release.set()
        thread.join(30)
        self.assertFalse(thread.is_alive())
        self.assertNotIn("error", outcome, f"the running stream failed during the drain: {outcome.get('error')}")
        result = outcome["result"]
        self.assertEqual(result["request_id"], "py-drain")
        self.assertEqual(len(result["finals"]), 1)
        self.assertEqual(len(result["summaries"]), 1)
        self.assertGreaterEqual(len(result["answer_tokens"]), 1)
        self.assert_drained_exit(signalled)

    def test_sigterm_right_after_stream_start(self):
        # SIGTERM as soon as the config is on its way, the audio following at full speed. The server
        # notices the signal within ~50 ms, by when the call is normally running: it completes. A call
        # that had not reached the service yet is refused with UNAVAILABLE before any response, which
        # the API allows; anything else (a cut-off stream, an error after responses) fails.
        wav = AudioFixture.require(self)
        signalled = []

        def before_chunk(index, audio_end):
            if index == 0:
                self.server.process.send_signal(signal.SIGTERM)
                signalled.append(time.monotonic())

        responses = []
        try:
            result = slm_client.stream_file(self.channel, wav, task="respond", token=TOKEN, timeout=30,
                                            before_chunk=before_chunk, on_response=responses.append)
            self.assertEqual(len(result["finals"]), 1)
            self.assertGreaterEqual(len(result["answer_tokens"]), 1)
            self.assertEqual(len(result["summaries"]), 1)
        except grpc.RpcError as e:
            self.assertEqual((e.code(), responses), (grpc.StatusCode.UNAVAILABLE, []), e.details())
            self.assertIn("draining", e.details())
        self.assert_drained_exit(signalled[0])

    def assert_drained_exit(self, signalled):
        """The server exits 0 within the drain time after SIGTERM and prints its "drained" line."""
        try:
            code = self.server.process.wait(timeout=max(0.1, self.DRAIN_SECONDS + 5 - (time.monotonic() - signalled)))
        except subprocess.TimeoutExpired:
            self.fail(f"the server did not exit within {self.DRAIN_SECONDS} s drain + 5 s; log:\n"
                      f"{self.server.log_tail()}")
        self.assertEqual(code, 0, self.server.log_tail())
        self.assertLess(time.monotonic() - signalled, self.DRAIN_SECONDS)  # it did not wait out the drain
        self.server.reader.join(5)
        self.assertTrue(any(line.startswith("drained") for line in self.server.stdout_lines),
                        self.server.stdout_lines)


def main():
    global SLM
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slm", default=os.path.join(REPO, "build", "cli", "slm"), help="the slm executable")
    args, rest = parser.parse_known_args()
    SLM = os.path.abspath(args.slm)
    if not os.access(SLM, os.X_OK):
        print(f"error: {SLM} is not an executable (pass --slm)", file=sys.stderr)
        return 1
    if shutil.which("protoc") is None:
        try:
            import slm.v1.speech_pb2  # noqa: F401  (generated beforehand: no protoc needed)
        except ImportError:
            print("skipped: protoc not found (apt install protobuf-compiler)")
            return SKIP
    # A private cache for the generated speech_pb2 (so the test never depends on ~/.cache).
    cache = tempfile.mkdtemp(prefix="slm-client-cache-")
    os.environ["XDG_CACHE_HOME"] = cache
    try:
        AudioFixture.make()
        program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if AudioFixture.folder:
            shutil.rmtree(AudioFixture.folder, ignore_errors=True)
    result = program.result
    if not result.wasSuccessful():
        return 1
    return SKIP if result.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
