#!/usr/bin/env python3
"""Speech through the official `openai` package against a server with a TTS adapter.

    .venv/bin/python tests/http/openai_speech_check.py --base-url http://HOST:PORT/v1 --model tts

Run by tests/http/speech_python_test.cpp, which starts the server in process with a test TTS
adapter (the committed sample models have none). Exits 77 when openai is missing.
"""

import argparse
import base64
import io
import sys
import wave

try:
    import openai
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="none", max_retries=0)

    speech = client.audio.speech.create(model=args.model, voice="default", input="a dog barks", response_format="wav")
    data = speech.content if hasattr(speech, "content") else speech.read()
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, w.getparams()
        assert w.getnframes() > 1000, w.getnframes()

    with client.audio.speech.with_streaming_response.create(model=args.model, voice="default", input="a dog barks",
                                                            response_format="pcm") as response:
        pcm = b"".join(response.iter_bytes())
    assert len(pcm) > 2000 and len(pcm) % 2 == 0, len(pcm)

    completion = client.chat.completions.create(
        model="sqa", modalities=["text", "audio"], audio={"voice": "default", "format": "wav"}, max_tokens=8,
        messages=[{"role": "user", "content": "a dog is"}])
    audio = completion.choices[0].message.audio
    assert audio.transcript, completion
    assert base64.b64decode(audio.data)[:4] == b"RIFF"

    try:
        client.audio.speech.create(model=args.model, voice="alloy", input="x")
        raise AssertionError("an unknown voice was accepted")
    except openai.BadRequestError as e:
        assert "voice 'alloy' is not served" in str(e), e
    print("PASS")


if __name__ == "__main__":
    main()
