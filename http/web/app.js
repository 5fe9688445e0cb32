// The slm web page: press to talk over the realtime WebSocket (/v1/realtime, OpenAI Realtime
// events), and file upload to /v1/audio/transcriptions and /v1/chat/completions. Plain JS, served
// by the server itself (http/static_files.h). `?token=...` fills the token; `?autotalk=SECONDS`
// talks once for that long as soon as the session is ready (used by the headless-browser test).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  ws: null, session: null, talking: false, releasedAt: 0, sentAudio: false, endedByServer: false,
  firstToken: false, firstAudio: false, audio: null, player: null, playAt: 0,
  models: [], autotalkDone: false, pendingAnswer: "", pendingFinal: "",
};

function setStatus(text, error) {
  const s = $("status");
  s.textContent = text;
  s.className = error ? "error" : "";
}

function token() {
  return $("token").value || params.get("token") || localStorage.getItem("slm-token") || "";
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function ms(value) {
  return value > 0 ? value.toFixed(0) + " ms" : "-";
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: authHeaders() });
  if (response.status === 401) {
    setStatus("this server needs a token: enter it above", true);
    return false;
  }
  const body = await response.json();
  state.models = body.data || [];
  const base = state.models[0];
  const adapters = state.models.slice(1).map((m) => m.id + " (" + (m.tasks || []).join(", ") + ")");
  $("model").textContent = base ? base.id + (adapters.length ? " + " + adapters.join(", ") : "") : "no model";
  return true;
}

function answeringModel() {
  const sqa = state.models.find((m) => (m.tasks || []).includes("sqa"));
  return sqa ? sqa.id : "";
}

function connect() {
  const protocols = ["realtime"];
  if (token()) protocols.push("openai-insecure-api-key." + token());
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/v1/realtime", protocols);
  state.ws = ws;
  ws.onmessage = (message) => onEvent(JSON.parse(message.data));
  ws.onopen = () => setStatus("connected");
  ws.onclose = () => {
    $("talk").disabled = true;
    if (state.ws === ws) {
      setStatus("disconnected; reconnecting...", true);
      setTimeout(connect, 2000);
    }
  };
}

function send(event) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(event));
}

function configure() {
  const canAnswer = state.session && state.session.max_respond_seconds > 0;
  const canSpeak = state.session && (state.session.voices || []).length > 0;
  const respond = canAnswer && $("respond").checked;
  $("respond").disabled = !canAnswer;
  $("speak").disabled = !canSpeak || !respond;
  send({
    type: "session.update",
    session: {
      type: respond ? "realtime" : "transcription",
      model: respond ? answeringModel() : undefined,
      output_modalities: respond && canSpeak && $("speak").checked ? ["text", "audio"] : ["text"],
      audio: { input: { format: { type: "audio/pcm", rate: 16000 }, turn_detection: { type: "server_vad" } } },
    },
  });
}

function onEvent(e) {
  switch (e.type) {
    case "session.created":
      state.session = e.session;
      configure();
      break;
    case "session.updated":
      state.session = e.session;
      $("talk").disabled = false;
      setStatus("ready: hold the button (or the space bar) and speak");
      if (params.get("autotalk") && !state.autotalkDone) {
        state.autotalkDone = true;
        autoTalk(parseFloat(params.get("autotalk")));
      }
      break;
    case "input_audio_buffer.speech_started":
      state.endedByServer = false;
      break;
    case "conversation.item.input_audio_transcription.delta":
      state.endedByServer = false;
      $("interim").textContent = e.transcript;
      break;
    case "conversation.item.input_audio_transcription.completed":
      $("interim").textContent = "";
      $("final").textContent = e.transcript;
      state.endedByServer = true;
      state.pendingFinal = e.transcript;
      if (state.releasedAt) $("lat-client-final").textContent = ms(performance.now() - state.releasedAt);
      if (state.session.type !== "realtime") addHistory(e.transcript, "");
      break;
    case "response.created":
      $("answer").textContent = "";
      state.firstToken = false;
      state.firstAudio = false;
      break;
    case "response.output_text.delta":
      $("answer").textContent += e.delta;
      if (!state.firstToken && state.releasedAt) {
        state.firstToken = true;
        $("lat-client-token").textContent = ms(performance.now() - state.releasedAt);
      }
      break;
    case "response.output_audio.delta":
      play(e.delta, e.sample_rate || 24000);
      if (!state.firstAudio && state.releasedAt) {
        state.firstAudio = true;
        $("lat-client-audio").textContent = ms(performance.now() - state.releasedAt);
      }
      break;
    case "response.done": {
      const l = e.response.latency || {};
      $("lat-interim").textContent = ms(l.first_interim_ms);
      $("lat-final").textContent = ms(l.final_after_end_of_audio_ms);
      $("lat-token").textContent = ms(l.first_answer_token_ms);
      addHistory(state.pendingFinal, $("answer").textContent);
      break;
    }
    case "error":
      setStatus("error: " + e.error.message, true);
      break;
  }
}

function addHistory(question, answer) {
  const item = document.createElement("li");
  item.textContent = answer ? question + "  \u2192  " + answer : question;
  $("history").prepend(item);
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function startMicrophone() {
  if (state.audio) {
    await state.audio.context.resume();
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule("worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "pcm16-downsampler");
  const mute = context.createGain();
  mute.gain.value = 0;
  source.connect(node);
  node.connect(mute);
  mute.connect(context.destination);  // keeps the worklet pulled by the graph
  node.port.onmessage = (message) => {
    $("level").style.width = Math.min(100, message.data.peak * 140) + "%";
    if (!state.talking) return;
    send({ type: "input_audio_buffer.append", audio: base64(message.data.pcm) });
    state.sentAudio = true;
  };
  state.audio = { context, stream };
  await context.resume();
}

async function startTalking() {
  if (state.talking) return;
  try {
    if (!state.player) state.player = new AudioContext();
    await state.player.resume();
    await startMicrophone();
  } catch (error) {
    setStatus("microphone: " + error.message, true);
    return;
  }
  state.talking = true;
  state.sentAudio = false;
  state.endedByServer = false;
  state.releasedAt = 0;
  $("talk").classList.add("live");
  $("talk").textContent = "Listening... release to send";
  $("interim").textContent = "";
  $("final").textContent = "";
  $("answer").textContent = "";
  for (const id of ["lat-interim", "lat-final", "lat-token", "lat-client-final", "lat-client-token", "lat-client-audio"])
    $(id).textContent = "-";
}

function stopTalking() {
  if (!state.talking) return;
  state.talking = false;
  state.releasedAt = performance.now();
  $("talk").classList.remove("live");
  $("talk").textContent = "Hold to talk";
  // The server's endpointing may have ended the utterance already: committing the silence held
  // since would be a second, empty question.
  if (state.sentAudio && !state.endedByServer) send({ type: "input_audio_buffer.commit" });
}

function autoTalk(seconds) {
  startTalking().then(() => setTimeout(stopTalking, seconds * 1000));
}

function play(b64, rate) {
  const player = state.player || (state.player = new AudioContext());
  const bytes = atob(b64);
  const n = bytes.length >> 1;
  if (n === 0) return;
  const buffer = player.createBuffer(1, n, rate);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < n; i++) {
    let v = bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8);
    if (v >= 32768) v -= 65536;
    channel[i] = v / 32768;
  }
  const source = player.createBufferSource();
  source.buffer = buffer;
  source.connect(player.destination);
  const at = Math.max(player.currentTime + 0.05, state.playAt);
  source.start(at);
  state.playAt = at + buffer.duration;
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function transcribeFile() {
  const file = $("file").files[0];
  if (!file) return setStatus("choose an audio file first", true);
  const form = new FormData();
  form.append("file", file);
  form.append("model", state.models.length ? state.models[0].id : "");
  form.append("response_format", "verbose_json");
  const started = performance.now();
  const response = await fetch("/v1/audio/transcriptions", { method: "POST", headers: authHeaders(), body: form });
  const body = await response.json();
  if (!response.ok) return setStatus("transcription: " + body.error.message, true);
  $("file-result").textContent = body.text + "  (" + body.duration.toFixed(1) + " s of audio, " +
    body.words.length + " words, " + ms(performance.now() - started) + ")";
}

async function askFile() {
  const file = $("file").files[0];
  if (!file) return setStatus("choose an audio file first", true);
  const model = answeringModel();
  if (!model) return setStatus("this server has no spoken-QA adapter", true);
  const format = /\.mp3$/i.test(file.name) ? "mp3" : /\.flac$/i.test(file.name) ? "flac" : /\.ogg$/i.test(file.name) ? "ogg" : "wav";
  const request = {
    model, stream: true,
    messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { data: await readBase64(file), format } }] }],
  };
  const started = performance.now();
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()), body: JSON.stringify(request),
  });
  if (!response.ok) return setStatus("chat: " + (await response.json()).error.message, true);
  $("file-result").textContent = "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "", first = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const line = pending.slice(0, end).replace(/^data: /, "");
      pending = pending.slice(end + 2);
      if (line === "[DONE]") continue;
      const chunk = JSON.parse(line);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
      if (delta) {
        if (!first) first = performance.now() - started;
        $("file-result").textContent += delta;
      }
    }
  }
  $("file-result").textContent += "  (first token " + ms(first) + ")";
}

function main() {
  if (params.get("token")) localStorage.setItem("slm-token", params.get("token"));
  $("token").value = token();
  $("token").addEventListener("change", () => {
    localStorage.setItem("slm-token", $("token").value);
    if (state.ws) state.ws.close();
    loadModels().then((ok) => ok && connect());
  });
  const talk = $("talk");
  talk.addEventListener("pointerdown", (e) => { e.preventDefault(); startTalking(); });
  for (const end of ["pointerup", "pointerleave", "pointercancel"]) talk.addEventListener(end, stopTalking);
  document.addEventListener("keydown", (e) => { if (e.code === "Space" && !e.repeat && e.target.tagName !== "INPUT") { e.preventDefault(); startTalking(); } });
  document.addEventListener("keyup", (e) => { if (e.code === "Space" && e.target.tagName !== "INPUT") stopTalking(); });
  $("respond").addEventListener("change", configure);
  $("speak").addEventListener("change", configure);
  $("transcribe").addEventListener("click", () => transcribeFile().catch((e) => setStatus(e.message, true)));
  $("ask").addEventListener("click", () => askFile().catch((e) => setStatus(e.message, true)));
  loadModels().then((ok) => ok && connect()).catch((e) => setStatus(e.message, true));
}

main();
