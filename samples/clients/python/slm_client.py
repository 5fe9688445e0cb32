#!/usr/bin/python3
"""Python client for the slm gRPC speech server (slm.v1.Speech, serve/proto/slm/v1/speech.proto).

A small library and a command line, needing only Debian's python3-grpcio, python3-protobuf and
protoc (protobuf-compiler):

    slm_client.py stream --server HOST:PORT --audio FILE.wav [--realtime] [--interim]
                         [--task transcribe|respond] [--adapter NAME] [--token T] [--chunk-ms 160] [--json]
    slm_client.py transcribe --server HOST:PORT --audio FILE [--json]
    slm_client.py synthesize --server HOST:PORT --text TEXT --out FILE.wav [--rate HZ] [--json]
    slm_client.py models --server HOST:PORT [--json]
    slm_client.py health --server HOST:PORT [--service slm.v1.Speech]
    slm_client.py services --server HOST:PORT          (server reflection: the services served)

Message classes: speech_pb2 is imported when importable (e.g. generated onto PYTHONPATH);
otherwise, or when a proto root is given (--proto-root or $SLM_PROTO_ROOT), it is generated with
`protoc --python_out` into a cache folder ($XDG_CACHE_HOME or ~/.cache, then
slm-python-client/<hash of the proto and protoc version>) and loaded from there. The default proto
root is ../../../serve/proto relative to this file (the repository's). No gRPC service stubs are
generated: methods are called by name through the channel.

As a library:

    import slm_client
    channel = slm_client.make_channel("127.0.0.1:50051")
    result = slm_client.stream_file(channel, "question.wav", task="respond", token="...")
    print(result["transcript"], result["answer"])

Errors from the server raise grpc.RpcError (e.code(), e.details()).
"""

import argparse
import array
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave

import grpc
from google.protobuf import json_format

SERVICE = "slm.v1.Speech"
PROTO_FILE = "slm/v1/speech.proto"  # relative to the proto root
DEFAULT_PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "..", "serve", "proto"))

# ---------------------------------------------------------------------------------------------
# Message classes


class ProtoError(RuntimeError):
    """speech_pb2 could neither be imported nor generated."""


_pb2 = None


def _cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "slm-python-client")


def generate_pb2(proto_root, protoc="protoc"):
    """Runs protoc on <proto_root>/slm/v1/speech.proto into the cache; returns the speech_pb2.py path.

    The cache folder is named by a hash of the proto file and of `protoc --version`, so an edited
    proto or another protoc gets a fresh module, and concurrent clients never see a half-written one.
    """
    proto = os.path.join(proto_root, PROTO_FILE)
    try:
        with open(proto, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ProtoError(f"cannot read {proto} ({e.strerror}); pass --proto-root or set SLM_PROTO_ROOT") from e
    if shutil.which(protoc) is None:
        raise ProtoError(f"'{protoc}' not found: install protobuf-compiler (Debian) to generate speech_pb2")
    version = subprocess.run([protoc, "--version"], capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256(source + b"\0" + version.encode()).hexdigest()[:16]
    folder = os.path.join(_cache_root(), digest)
    module = os.path.join(folder, "slm", "v1", "speech_pb2.py")
    if os.path.exists(module):
        return module
    os.makedirs(_cache_root(), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=_cache_root())
    try:
        done = subprocess.run([protoc, "-I", proto_root, f"--python_out={staging}", PROTO_FILE],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ProtoError(f"protoc failed on {proto}: {done.stderr.strip()}")
        try:
            os.rename(staging, folder)  # atomic; loses harmlessly to a concurrent client
        except OSError:
            if not os.path.exists(module):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return module


def load_pb2(proto_root=None):
    """The speech_pb2 module (cached per process); see the module docstring for where it comes from."""
    global _pb2
    if _pb2 is not None:
        return _pb2
    proto_root = proto_root or os.environ.get("SLM_PROTO_ROOT")
    if not proto_root:
        try:
            _pb2 = importlib.import_module("slm.v1.speech_pb2")
            return _pb2
        except ImportError:
            proto_root = DEFAULT_PROTO_ROOT
    path = generate_pb2(proto_root)
    spec = importlib.util.spec_from_file_location("slm_v1_speech_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[spec.name] = module
    _pb2 = module
    return _pb2


def to_dict(message):
    """A protobuf message as a dict with the proto's field names, enum names and default values."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


# ---------------------------------------------------------------------------------------------
# Channel and calls


def make_channel(server, ca_file=None):
    """A channel to host:port; TLS with the root certificate in `ca_file` (PEM), else plaintext."""
    options = [("grpc.max_receive_message_length", 64 << 20)]
    if ca_file:
        with open(ca_file, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(server, credentials, options=options)
    return grpc.insecure_channel(server, options=options)


def auth_metadata(token):
    """The call metadata carrying a bearer token (empty without one)."""
    return [("authorization", f"Bearer {token}")] if token else []


def _method(channel, kind, name, request_type, response_type):
    pb2 = load_pb2()
    return getattr(channel, kind)(f"/{SERVICE}/{name}",
                                  request_serializer=getattr(pb2, request_type).SerializeToString,
                                  response_deserializer=getattr(pb2, response_type).FromString)


def converse_call(channel):
    """The raw Converse callable: call(iterator of ConverseRequest, metadata=..., timeout=...)."""
    return _method(channel, "stream_stream", "Converse", "ConverseRequest", "ConverseResponse")


def list_models(channel, token=None, timeout=10):
    """ListModels -> ListModelsResponse."""
    call = _method(channel, "unary_unary", "ListModels", "ListModelsRequest", "ListModelsResponse")
    return call(load_pb2().ListModelsRequest(), metadata=auth_metadata(token), timeout=timeout)


def transcribe_bytes(channel, audio, token=None, encoding=0, sample_rate_hz=0, adapter="", model="",
                     request_id="", timeout=60):
    """Transcribe -> TranscribeResponse. encoding 0 (unspecified): `audio` is a whole file (WAV, FLAC, ...)."""
    pb2 = load_pb2()
    request = pb2.TranscribeRequest(audio=audio, encoding=encoding, sample_rate_hz=sample_rate_hz,
                                    adapter=adapter, model=model, request_id=request_id)
    call = _method(channel, "unary_unary", "Transcribe", "TranscribeRequest", "TranscribeResponse")
    return call(request, metadata=auth_metadata(token), timeout=timeout)


def transcribe_file(channel, path, **kwargs):
    with open(path, "rb") as f:
        return transcribe_bytes(channel, f.read(), **kwargs)


# ---------------------------------------------------------------------------------------------
# Health and reflection, in raw protobuf bytes (no grpcio-health-checking / grpcio-reflection needed)

HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf):
    """Yields (field number, value) of a protobuf message: int for varints, bytes for length-delimited."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            size, i = _read_varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _read_varint(buf, i):
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _raw(value):
    return value


def health_check(channel, service="", timeout=10, token=None):
    """grpc.health.v1.Health/Check -> "SERVING", "NOT_SERVING", ... ("" is the server overall)."""
    request = b"\x0a" + _varint(len(service.encode())) + service.encode() if service else b""
    call = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=_raw, response_deserializer=_raw)
    response = call(request, timeout=timeout, metadata=auth_metadata(token))
    status = dict(_fields(response)).get(1, 0)  # HealthCheckResponse.status; absent = 0 (UNKNOWN)
    return HEALTH_STATUS.get(status, str(status))


def list_services(channel, timeout=10, token=None):
    """Server reflection (v1alpha) list_services -> the names of the services served."""
    call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 request_serializer=_raw, response_deserializer=_raw)
    names = []
    for response in call(iter([b"\x3a\x00"]), timeout=timeout, metadata=auth_metadata(token)):
        for number, value in _fields(response):
            if number == 6:  # list_services_response { repeated ServiceResponse service = 1 { name = 1 } }
                names += [dict(_fields(s)).get(1, b"").decode() for n, s in _fields(value) if n == 1]
            elif number == 7:  # error_response { error_code = 1; error_message = 2 }
                error = dict(_fields(value))
                raise RuntimeError(f"reflection error {error.get(1, 0)}: {error.get(2, b'').decode()}")
    return names


# ---------------------------------------------------------------------------------------------
# Audio


def read_wav(path):
    """A PCM WAV file -> (samples as floats in [-1, 1], mono (channels averaged), sample rate)."""
    with wave.open(path, "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        frames = w.readframes(w.getnframes())
    if width == 1:  # unsigned 8-bit
        values = [(b - 128) / 128.0 for b in frames]
    elif width == 2:
        ints = array.array("h", frames)
        if sys.byteorder == "big":
            ints.byteswap()
        values = [v / 32768.0 for v in ints]
    elif width == 3:
        values = [int.from_bytes(frames[i:i + 3], "little", signed=True) / 8388608.0
                  for i in range(0, len(frames), 3)]
    elif width == 4:
        ints = array.array("i", frames)
        if sys.byteorder == "big":
            ints.byteswap()
        values = [v / 2147483648.0 for v in ints]
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported")
    if channels > 1:
        values = [sum(values[i:i + channels]) / channels for i in range(0, len(values), channels)]
    return values, rate


def encode_samples(samples, encoding):
    """Float samples -> LINEAR16 (int16 little-endian; x * 32768, the server's inverse) or FLOAT32 bytes."""
    if encoding == "float32":
        return struct.pack(f"<{len(samples)}f", *samples)
    ints = array.array("h", (max(-32768, min(32767, round(x * 32768.0))) for x in samples))
    if sys.byteorder == "big":
        ints.byteswap()
    return ints.tobytes()


def decode_samples(data, encoding):
    """LINEAR16 (1) or FLOAT32 (2) bytes -> float samples (the inverse of encode_samples)."""
    if encoding == 2:
        return list(struct.unpack(f"<{len(data) // 4}f", data[:len(data) // 4 * 4]))
    ints = array.array("h", data[:len(data) // 2 * 2])
    if sys.byteorder == "big":
        ints.byteswap()
    return [v / 32768.0 for v in ints]


def write_wav(path, samples, rate):
    """Float samples -> a 16-bit PCM mono WAV file."""
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(encode_samples(samples, "linear16"))


# ---------------------------------------------------------------------------------------------
# Synthesize

def synthesize(channel, text, *, token=None, voice="", encoding="linear16", sample_rate_hz=0,
               request_id="", timeout=120):
    """Synthesize: the streamed chunks joined. Returns a dict with samples (floats), sample_rate,
    chunks, first_chunk_ms (client-side, from the call to the first chunk), request_id and the
    server's summary (audio_seconds, first_audio_ms, total_ms, words)."""
    pb2 = load_pb2()
    request = pb2.SynthesizeRequest(text=text, voice=voice, encoding=ENCODINGS[encoding],
                                    sample_rate_hz=sample_rate_hz, request_id=request_id)
    call = _method(channel, "unary_stream", "Synthesize", "SynthesizeRequest", "SynthesizeResponse")
    start = time.monotonic()
    out = {"samples": [], "sample_rate": 0, "chunks": 0, "first_chunk_ms": None, "request_id": "", "summary": None}
    for response in call(request, metadata=auth_metadata(token), timeout=timeout):
        out["request_id"] = response.request_id
        if response.HasField("audio"):
            chunk = response.audio
            if out["first_chunk_ms"] is None:
                out["first_chunk_ms"] = (time.monotonic() - start) * 1000.0
            out["samples"].extend(decode_samples(chunk.audio, chunk.encoding))
            out["sample_rate"] = chunk.sample_rate_hz
            out["chunks"] += 1
        elif response.HasField("summary"):
            summary = response.summary
            out["summary"] = {"audio_seconds": summary.audio_seconds, "first_audio_ms": summary.first_audio_ms,
                              "total_ms": summary.total_ms,
                              "words": [{"word": w.word, "start": w.start_seconds, "end": w.end_seconds}
                                        for w in summary.words]}
    return out


# ---------------------------------------------------------------------------------------------
# Streaming (Converse)

TASKS = {"transcribe": 1, "respond": 2}
ENCODINGS = {"linear16": 1, "float32": 2}


def stream_audio(channel, samples, sample_rate, *, task="transcribe", interim=False, realtime=False,
                 chunk_ms=160, encoding="linear16", endpointing_ms=-1, max_answer_tokens=0, adapter="",
                 model="", request_id="", token=None, timeout=None, end_of_utterance=False,
                 on_response=None, before_chunk=None):
    """Streams mono float samples through Converse and collects what comes back.

    task "transcribe" or "respond"; encoding "linear16" or "float32"; endpointing_ms -1 ends the
    utterance only at the end of the audio (0 = the server's default silence). realtime paces each
    chunk at the end time of its audio. on_response(entry) sees each response as it arrives (entry
    as in result["responses"]); before_chunk(index, audio_end_seconds) runs on the sending thread
    before each audio chunk (a hook for tests and custom pacing).

    Latencies follow `slm client stream`: an interim's is its arrival minus the send time of the
    chunk holding the end of its audio; the final's and the first answer token's are their arrival
    minus the send time of the last chunk sent before them. Times are ms since the config was sent.

    Returns a dict: request_id, transcript (finals joined by " | "), answer, audio_seconds,
    interim_transcripts, final_latency_ms, first_answer_token_latency_ms (None without tokens),
    wall_seconds, responses, interims, finals, answer_tokens, summaries. Raises grpc.RpcError.
    """
    pb2 = load_pb2()
    config = pb2.StreamConfig(encoding=ENCODINGS[encoding], sample_rate_hz=sample_rate, task=TASKS[task],
                              interim_results=interim, endpointing_silence_ms=endpointing_ms,
                              max_answer_tokens=max_answer_tokens, adapter=adapter, model=model,
                              request_id=request_id)
    chunk = max(1, int(sample_rate * chunk_ms / 1000.0))
    lock = threading.Lock()
    sent = []  # (audio end seconds, send time ms)
    start = time.monotonic()

    def since_start_ms():
        return (time.monotonic() - start) * 1000.0

    def requests():
        yield pb2.ConverseRequest(config=config)
        for index, begin in enumerate(range(0, len(samples), chunk)):
            piece = samples[begin:begin + chunk]
            audio_end = (begin + len(piece)) / sample_rate
            if before_chunk is not None:
                before_chunk(index, audio_end)
            if realtime:
                time.sleep(max(0.0, start + audio_end - time.monotonic()))
            message = pb2.ConverseRequest(audio=encode_samples(piece, encoding))
            with lock:
                sent.append((audio_end, since_start_ms()))
            yield message
        if end_of_utterance:
            yield pb2.ConverseRequest(end_of_utterance=pb2.EndOfUtterance())

    result = {"request_id": "", "transcript": "", "answer": "", "audio_seconds": len(samples) / sample_rate,
              "interim_transcripts": 0, "final_latency_ms": None, "first_answer_token_latency_ms": None,
              "wall_seconds": 0.0, "responses": [], "interims": [], "finals": [], "answer_tokens": [],
              "summaries": []}
    finals_text = []
    call = converse_call(channel)(requests(), metadata=auth_metadata(token), timeout=timeout)
    for response in call:
        arrival = since_start_ms()
        kind = response.WhichOneof("response")
        body = to_dict(getattr(response, kind)) if kind else {}
        entry = {"arrival_ms": arrival, "request_id": response.request_id,
                 "utterance_index": response.utterance_index, "kind": kind, kind: body}
        with lock:
            last_send = sent[-1][1] if sent else 0.0
            if kind == "interim_transcript":
                end = response.interim_transcript.audio_end_seconds
                send_time = next((at for audio_end, at in sent if audio_end + 1e-6 >= end), last_send)
                entry["latency_ms"] = arrival - send_time
                result["interims"].append(entry)
            elif kind == "final_transcript":
                entry["latency_ms"] = result["final_latency_ms"] = arrival - last_send
                finals_text.append(response.final_transcript.text)
                result["finals"].append(entry)
            elif kind == "answer_token":
                if result["first_answer_token_latency_ms"] is None:
                    result["first_answer_token_latency_ms"] = arrival - last_send
                result["answer"] += response.answer_token.text
                result["answer_tokens"].append(entry)
            elif kind == "summary":
                result["summaries"].append(entry)
        result["request_id"] = result["request_id"] or response.request_id
        result["responses"].append(entry)
        if on_response is not None:
            on_response(entry)
    result["transcript"] = " | ".join(finals_text)
    result["interim_transcripts"] = len(result["interims"])
    result["wall_seconds"] = time.monotonic() - start
    return result


def stream_file(channel, path, **kwargs):
    """stream_audio on a WAV file at its own rate (the server resamples); same keywords and result."""
    samples, rate = read_wav(path)
    return stream_audio(channel, samples, rate, **kwargs)


# ---------------------------------------------------------------------------------------------
# Command line


def _print_response(entry, state):
    """Human-readable lines like `slm client stream`'s."""
    at = f"[{entry['arrival_ms'] / 1000.0:.2f} s] "
    kind = entry["kind"]
    if kind != "answer_token" and state.get("answering"):
        print()
        state["answering"] = False
    if kind == "interim_transcript":
        r = entry[kind]
        print(f"{at}interim   {r['text']}  (stability {r['stability']:.2f})", flush=True)
    elif kind == "final_transcript":
        r = entry[kind]
        print(f"{at}final     {r['text']}  (confidence {r['confidence']:.2f}, {r['end_reason']})")
        words = " ".join(f"{w['word']}@{w['start_seconds']:.2f}-{w['end_seconds']:.2f}" for w in r["words"])
        print(f"           words: {words}", flush=True)
    elif kind == "answer_token":
        if not state.get("answering"):
            print(f"{at}answer    ", end="")
            state["answering"] = True
        print(entry[kind]["text"], end="", flush=True)
    elif kind == "summary":
        s = entry[kind]
        line = (f"{at}summary   utterance {entry['utterance_index']}: {s['audio_seconds_processed']:.2f} s audio, "
                f"first interim {s['first_interim_ms']:.1f} ms, final {s['final_after_end_of_audio_ms']:.1f} ms "
                f"after the audio ended")
        if s["tokens_generated"] > 0:
            line += (f", first answer token {s['first_answer_token_ms']:.1f} ms, {s['tokens_generated']} tokens "
                     f"({s['finish_reason']}, adapter {s['adapter']})")
        print(line, flush=True)


def _emit(report, as_json):
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        print(f"{key}: {value}")


def _cmd_stream(args, channel):
    state = {}
    result = stream_file(channel, args.audio, task=args.task, interim=args.interim, realtime=args.realtime,
                         chunk_ms=args.chunk_ms, encoding=args.encoding, endpointing_ms=args.endpointing_ms,
                         max_answer_tokens=args.max_answer_tokens, adapter=args.adapter,
                         request_id=args.request_id, token=args.token, timeout=args.deadline or None,
                         on_response=None if args.json else (lambda entry: _print_response(entry, state)))
    if state.get("answering"):
        print()
    keys = ["request_id", "transcript"] + (["answer"] if args.task == "respond" else []) + [
        "audio_seconds", "interim_transcripts", "final_latency_ms"]
    if result["first_answer_token_latency_ms"] is not None:
        keys.append("first_answer_token_latency_ms")
    keys.append("wall_seconds")
    report = {k: result[k] for k in keys}
    if args.json:
        for k in ("finals", "summaries", "responses"):
            report[k] = result[k]
    _emit(report, args.json)


def _cmd_transcribe(args, channel):
    response = transcribe_file(channel, args.audio, adapter=args.adapter, token=args.token,
                               timeout=args.deadline or 60)
    t = response.transcript
    report = {"request_id": response.request_id, "transcript": t.text, "confidence": t.confidence,
              "words": [{"word": w.word, "start": w.start_seconds, "end": w.end_seconds,
                         "confidence": w.confidence} for w in t.words],
              "audio_seconds": response.audio_seconds, "processing_ms": response.processing_ms}
    if args.json:
        _emit(report, True)
        return
    print(f"transcript: {t.text}  (confidence {t.confidence:.2f})")
    print("words: " + " ".join(f"{w.word}@{w.start_seconds:.2f}-{w.end_seconds:.2f}" for w in t.words))
    print(f"audio_seconds: {response.audio_seconds:.3f}\nprocessing_ms: {response.processing_ms:.1f}")


def _cmd_synthesize(args, channel):
    result = synthesize(channel, args.text, token=args.token, voice=args.voice, encoding=args.encoding,
                        sample_rate_hz=args.rate, request_id=args.request_id, timeout=args.deadline or 120)
    if not result["samples"]:
        raise RuntimeError("the server sent no audio")
    write_wav(args.out, result["samples"], result["sample_rate"])
    report = {"out": args.out, "request_id": result["request_id"], "sample_rate": result["sample_rate"],
              "chunks": result["chunks"], "audio_seconds": len(result["samples"]) / result["sample_rate"],
              "first_chunk_ms": result["first_chunk_ms"], "summary": result["summary"]}
    if args.json:
        _emit(report, True)
        return
    for key in ("out", "sample_rate", "chunks", "audio_seconds", "first_chunk_ms"):
        print(f"{key}: {report[key]}")


def _cmd_models(args, channel):
    response = list_models(channel, token=args.token)
    if args.json:
        _emit(to_dict(response), True)
        return
    for m in response.models:
        print(f"{m.name}{' (default)' if m.is_default else ''}: {m.description}")
        print(f"  audio: {'yes' if m.accepts_audio else 'no'}, images: {'yes' if m.accepts_images else 'no'}, "
              f"context: {m.context_length} tokens")
        for a in m.adapters:
            print(f"  adapter {a.name}{' (default)' if a.is_default else ''}: tasks {', '.join(a.tasks)}")
    if response.voices:
        print(f"voices: {', '.join(response.voices)}")


def _cmd_health(args, channel):
    status = health_check(channel, args.service, token=args.token)
    print(status)
    return 0 if status == "SERVING" else 1


def _cmd_services(args, channel):
    for name in list_services(channel, token=args.token):
        print(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Client for the slm gRPC speech server (slm.v1.Speech).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    common.add_argument("--token", default=os.environ.get("SLM_TOKEN"), help="bearer token (default $SLM_TOKEN)")
    common.add_argument("--ca", help="TLS: the server's root certificate (PEM); default plaintext")
    common.add_argument("--proto-root", help="folder holding slm/v1/speech.proto (default $SLM_PROTO_ROOT, "
                                             "else the repository's serve/proto)")
    common.add_argument("--deadline", type=float, default=0, help="seconds; 0 = none")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stream", parents=[common], help="stream a WAV file (Converse)")
    p.add_argument("--audio", required=True, help="PCM WAV file, any rate (the server resamples)")
    p.add_argument("--realtime", action="store_true", help="send chunks at the pace of the audio")
    p.add_argument("--interim", action="store_true", help="ask for interim transcripts")
    p.add_argument("--task", choices=sorted(TASKS), default="transcribe")
    p.add_argument("--adapter", default="", help="adapter name (see `models`); default: the server's")
    p.add_argument("--encoding", choices=sorted(ENCODINGS), default="linear16")
    p.add_argument("--chunk-ms", type=float, default=160, help="audio per message, ms (default %(default)s)")
    p.add_argument("--endpointing-ms", type=int, default=-1,
                   help="trailing silence ending an utterance (0 = server default, -1 = off: end of file)")
    p.add_argument("--max-answer-tokens", type=int, default=0, help="0 = server default")
    p.add_argument("--request-id", default="", help="echoed in every response; default: the server assigns one")
    p.set_defaults(run=_cmd_stream)

    p = sub.add_parser("transcribe", parents=[common], help="transcribe a whole audio file (Transcribe)")
    p.add_argument("--audio", required=True, help="audio file (WAV, FLAC, OGG, ...), sent as is")
    p.add_argument("--adapter", default="")
    p.set_defaults(run=_cmd_transcribe)

    p = sub.add_parser("synthesize", parents=[common], help="speak text into a WAV file (Synthesize)")
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, help="16-bit PCM WAV file to write")
    p.add_argument("--voice", default="", help="a voice listed by `models`; default: the server's")
    p.add_argument("--rate", type=int, default=0, help="sample rate in Hz; 0 = the synthesizer's own")
    p.add_argument("--encoding", choices=sorted(ENCODINGS), default="linear16", help="on the wire")
    p.add_argument("--request-id", default="")
    p.set_defaults(run=_cmd_synthesize)

    p = sub.add_parser("models", parents=[common], help="the server's models and adapters (ListModels)")
    p.set_defaults(run=_cmd_models)

    p = sub.add_parser("health", parents=[common], help="grpc.health.v1 check; exit 0 only when SERVING")
    p.add_argument("--service", default="", help='"" (the server overall, default) or slm.v1.Speech')
    p.set_defaults(run=_cmd_health)

    p = sub.add_parser("services", parents=[common], help="services listed by server reflection")
    p.set_defaults(run=_cmd_services)

    args = parser.parse_args(argv)
    if args.command == "stream" and args.chunk_ms <= 0:
        parser.error("--chunk-ms must be > 0")
    try:
        load_pb2(args.proto_root)
        with make_channel(args.server, args.ca) as channel:
            return args.run(args, channel) or 0
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
    except (OSError, ValueError, EOFError, wave.Error, ProtoError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
