// Microphone frames -> 16 kHz 16-bit PCM in 20 ms pieces (320 samples), posted to the page.
// Each output sample averages the input samples of its period (a box filter against aliasing).
class Pcm16Downsampler extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / 16000;  // input samples per output sample
    this.position = 0;               // input position of the next output sample's period end
    this.sum = 0;
    this.count = 0;
    this.out = new Int16Array(320);
    this.filled = 0;
    this.peak = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channel = input[0];
    for (let i = 0; i < channel.length; i++) {
      const s = channel[i];
      this.sum += s;
      this.count += 1;
      this.peak = Math.max(this.peak, Math.abs(s));
      this.position += 1;
      if (this.position >= this.step) {
        this.position -= this.step;
        const v = Math.max(-1, Math.min(1, this.sum / this.count));
        this.out[this.filled++] = v < 0 ? v * 32768 : v * 32767;
        this.sum = 0;
        this.count = 0;
        if (this.filled === this.out.length) {
          this.port.postMessage({ pcm: this.out.buffer.slice(0), peak: this.peak });
          this.filled = 0;
          this.peak = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("pcm16-downsampler", Pcm16Downsampler);
