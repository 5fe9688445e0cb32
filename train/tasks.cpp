#include "train/tasks.h"

#include <algorithm>
#include <functional>

#include "adapters/tts.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/registry.h"
#include "text/tokenizer.h"
#include "train/evaluate.h"

namespace slm::train {
namespace {

std::string Required(const std::string& value, const char* field, const std::string& where,
                     const std::string& task) {
  Check(!value.empty(), where, ": task '", task, "' needs a non-empty \"", field, "\"");
  return value;
}

// The entry's units, from a string of unit tokens "<u12><u5>..." or an array of ids.
std::vector<int64_t> ParseUnits(const manifest::Entry& e, const std::string& where, const std::string& task) {
  Check(e.extra.contains("units"), where, ": task '", task, "' needs \"units\" (add them with `slm audio units ",
        "encode --manifest`)");
  const nlohmann::json& units = e.extra["units"];
  std::vector<int64_t> ids;
  if (units.is_array()) {
    for (const auto& u : units) {
      Check(u.is_number_integer() && u.get<int64_t>() >= 0, where, ": \"units\" must hold unit ids >= 0, got ",
            u.dump());
      ids.push_back(u.get<int64_t>());
    }
  } else {
    Check(units.is_string(), where, ": \"units\" must be a string of unit tokens or an array of ids");
    const std::string text = units.get<std::string>();
    size_t at = 0;
    while (at < text.size()) {
      const size_t close = text.find('>', at);
      Check(text.compare(at, 2, "<u") == 0 && close != std::string::npos && close > at + 2, where,
            ": \"units\" is not a sequence of unit tokens <uN> at character ", at);
      const std::string digits = text.substr(at + 2, close - at - 2);
      Check(digits.size() <= 9 && digits.find_first_not_of("0123456789") == std::string::npos, where,
            ": \"units\" has a malformed unit token '", text.substr(at, close - at + 1), "'");
      ids.push_back(std::stoll(digits));
      at = close + 1;
    }
  }
  Check(!ids.empty(), where, ": task '", task, "' needs a non-empty \"units\"");
  return ids;
}

// The unit fields every unit task shares: ids, their tokenizer's hash, largest id and count.
void ReadUnits(const manifest::Entry& e, const std::string& where, const std::string& task, TaskExample& x) {
  x.units = ParseUnits(e, where, task);
  x.max_unit = *std::max_element(x.units.begin(), x.units.end());
  x.num_units = static_cast<int64_t>(x.units.size());
  if (e.extra.contains("unit_tokenizer") && e.extra["unit_tokenizer"].is_string())
    x.unit_tokenizer = e.extra["unit_tokenizer"].get<std::string>();
}

// The batching length of most tasks: input audio when there is some, else the target's characters.
double AudioOrTarget(const TaskExample& x, double audio_seconds) {
  return audio_seconds > 0 ? audio_seconds * 100 : static_cast<double>(x.target.size());
}

struct Tasks {
  Registry<Task> registry{"task"};
  std::vector<std::string> order;  // as declared (the table in train/tasks.h)

  void Add(const std::string& name, Task task, const std::string& description) {
    if (!task.length) task.length = AudioOrTarget;
    registry.Add(name, std::move(task), description);
    order.push_back(name);
  }
};

// A task of the table: its default template, placeholders, example builder and evaluator.
Task Declare(std::string prompt, int speech, int images, decltype(Task::build) build,
             decltype(Task::evaluator) evaluator, TaskMetric headline) {
  Task t;
  t.headline = std::move(headline);
  t.prompt = std::move(prompt);
  t.speech = speech;
  t.images = images;
  t.build = std::move(build);
  t.evaluator = std::move(evaluator);
  return t;
}

const Tasks& AllTasks() {
  static const Tasks tasks = [] {
    using manifest::Entry;
    Tasks r;
    r.Add("asr", Declare("<speech> Transcribe:", 1, 0, [](const Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.audio = {fs::Resolve(base, Required(e.audio, "audio", where, "asr"))};
            x.target = Required(e.text, "text", where, "asr");
            return x;
          }, MakeAsrEvaluator, {"wer", false}), "speech -> transcript");
    r.Add("sqa", Declare("<speech> Answer:", 1, 0, [](const Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.audio = {fs::Resolve(base, Required(e.audio, "audio", where, "sqa"))};
            x.target = Required(e.response, "response", where, "sqa");
            return x;
          }, MakeSqaEvaluator, {"ranking_accuracy", true}), "spoken question -> text answer");
    r.Add("caption", Declare("<image> Describe the image:", 0, 1, [](const Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.images = {fs::Resolve(base, Required(e.image, "image", where, "caption"))};
            x.target = Required(e.text, "text", where, "caption");
            return x;
          }, MakeCaptionEvaluator, {"attribute_accuracy", true}), "image -> caption");
    r.Add("vqa", Declare("<image> {question}?", 0, 1, [](const Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.images = {fs::Resolve(base, Required(e.image, "image", where, "vqa"))};
            Required(e.prompt, "prompt", where, "vqa");
            x.target = Required(e.response, "response", where, "vqa");
            return x;
          }, MakeGenerationEvaluator, {"exact_match", true}), "image + question -> answer");
    r.Add("text", Declare("", 0, 0, [](const Entry& e, const std::string&, const std::string& where) {
            TaskExample x;
            x.target = Required(e.text, "text", where, "text");
            return x;
          }, MakeTextEvaluator, {"perplexity", false}), "plain language-model data");
    Task tts = Declare("Say: {text}", 0, 0, [](const Entry& e, const std::string& base, const std::string& where) {
      TaskExample x;
      if (!e.audio.empty()) x.reference_audio = fs::Resolve(base, e.audio);
      Required(e.text, "text", where, "tts");
      ReadUnits(e, where, "tts", x);
      for (const int64_t id : x.units) x.target += text::SpeechUnitToken(id);
      return x;
    }, MakeTtsEvaluator, {"loss", false});
    tts.predicts_units = tts.speaks = true;
    r.Add("tts", std::move(tts), "text -> speech units");
    Task interleaved = Declare("", 0, 0, [](const Entry& e, const std::string& base, const std::string& where) {
      TaskExample x;
      if (!e.audio.empty()) x.reference_audio = fs::Resolve(base, e.audio);
      if (e.extra.contains("units")) ReadUnits(e, where, "interleaved", x);  // frames mode needs none
      if (e.extra.contains("unit_durations")) {
        const nlohmann::json& d = e.extra["unit_durations"];
        Check(d.is_array(), where, ": \"unit_durations\" must be a list of frame counts");
        for (const auto& f : d) {
          Check(f.is_number_integer() && f.get<int64_t>() >= 1, where,
                ": \"unit_durations\" must hold frame counts >= 1, got ", f.dump());
          x.unit_durations.push_back(f.get<int64_t>());
        }
      }
      return x;  // the alignment (words, units) is checked by the dataset: AlignUtterance
    }, MakeInterleavedEvaluator, {"S->T", true});
    interleaved.predicts_units = interleaved.interleaves = true;
    // Its sequences are units and words rebuilt each epoch: their length is the units'.
    interleaved.length = [](const TaskExample& x, double) { return static_cast<double>(x.num_units); };
    r.Add("interleaved", std::move(interleaved), "word-aligned speech units + text -> interleaved sequences");
    return r;
  }();
  return tasks;
}

int Occurrences(const std::string& text, const std::string& what) {
  int count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++count;
  return count;
}

}  // namespace

std::vector<std::string> TaskNames() { return AllTasks().registry.Names(); }

const Task& GetTask(const std::string& name) { return AllTasks().registry.Get(name); }

std::vector<std::string> TasksWhere(const std::function<bool(const Task&)>& has) {
  std::vector<std::string> names;
  for (const std::string& name : AllTasks().order)
    if (has(GetTask(name))) names.push_back(name);
  return names;
}

const std::string& DefaultPromptTemplate(const std::string& task) { return GetTask(task).prompt; }

void CheckPromptTemplate(const std::string& task, const std::string& prompt_template) {
  const Task& t = GetTask(task);
  const int speech = Occurrences(prompt_template, "<speech>");
  const int images = Occurrences(prompt_template, "<image>");
  Check(speech == t.speech && images == t.images, "task '", task, "': prompt template \"",
        prompt_template, "\" has ", speech, " <speech> and ", images, " <image> placeholder(s); the task needs ",
        t.speech, " and ", t.images);
  for (const char* tts_only :
       {adapters::kPhonemesPlaceholder, adapters::kWordsPlaceholder, adapters::kWordPhonemesPlaceholder})
    Check(t.speaks || prompt_template.find(tts_only) == std::string::npos, "task '", task, "': prompt template \"",
          prompt_template, "\" uses ", tts_only, ", which only task ",
          Join(TasksWhere([](const Task& k) { return k.speaks; }), " or "), " has");
  if (t.speaks) adapters::CheckTtsTemplate(prompt_template);
}

TaskExample BuildTaskExample(const std::string& task, const std::string& prompt_template,
                             const manifest::Entry& entry, const std::string& base_dir,
                             const std::string& where) {
  const Task& t = GetTask(task);
  TaskExample x = t.build(entry, base_dir, where);
  x.prompt = prompt_template;
  std::string phonemes;
  if (prompt_template.find(adapters::kPhonemesPlaceholder) != std::string::npos) {
    Check(entry.extra.contains("phonemes") && entry.extra["phonemes"].is_string() &&
              !entry.extra["phonemes"].get<std::string>().empty(),
          where, ": the prompt template uses {phonemes} but the entry has no \"phonemes\" (the dataset adds them with ",
          "espeak-ng; a manifest may carry its own)");
    phonemes = entry.extra["phonemes"].get<std::string>();
  }
  if (t.speaks) {
    x.prompt = adapters::TtsPrompt(prompt_template, entry.text, phonemes);
    x.word_cued = adapters::IsWordCued(prompt_template);
    return x;
  }
  for (const auto& [key, value] : {std::pair<std::string, std::string>{"{question}", entry.prompt},
                                   {"{text}", entry.text}}) {
    for (size_t at = x.prompt.find(key); at != std::string::npos; at = x.prompt.find(key, at)) {
      x.prompt.replace(at, key.size(), value);
      at += value.size();
    }
  }
  return x;
}

}  // namespace slm::train
