#include "train/tasks.h"

#include <functional>

#include "core/error.h"
#include "core/fs.h"
#include "core/registry.h"

namespace slm::train {
namespace {

struct Task {
  std::string prompt;
  int speech = 0;  // placeholders its template must hold
  int images = 0;
  std::function<TaskExample(const manifest::Entry&, const std::string& base, const std::string& where)> build;
};

std::string Required(const std::string& value, const char* field, const std::string& where,
                     const std::string& task) {
  Check(!value.empty(), where, ": task '", task, "' needs a non-empty \"", field, "\"");
  return value;
}

const Registry<Task>& Tasks() {
  static const Registry<Task> registry = [] {
    Registry<Task> r("task");
    r.Add("asr", {"<speech> Transcribe:", 1, 0, [](const manifest::Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.audio = {fs::Resolve(base, Required(e.audio, "audio", where, "asr"))};
            x.target = Required(e.text, "text", where, "asr");
            return x;
          }}, "speech -> transcript");
    r.Add("sqa", {"<speech> Answer:", 1, 0, [](const manifest::Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.audio = {fs::Resolve(base, Required(e.audio, "audio", where, "sqa"))};
            x.target = Required(e.response, "response", where, "sqa");
            return x;
          }}, "spoken question -> text answer");
    r.Add("caption", {"<image> Describe the image:", 0, 1, [](const manifest::Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.images = {fs::Resolve(base, Required(e.image, "image", where, "caption"))};
            x.target = Required(e.text, "text", where, "caption");
            return x;
          }}, "image -> caption");
    r.Add("vqa", {"<image> {question}?", 0, 1, [](const manifest::Entry& e, const std::string& base, const std::string& where) {
            TaskExample x;
            x.images = {fs::Resolve(base, Required(e.image, "image", where, "vqa"))};
            Required(e.prompt, "prompt", where, "vqa");
            x.target = Required(e.response, "response", where, "vqa");
            return x;
          }}, "image + question -> answer");
    r.Add("text", {"", 0, 0, [](const manifest::Entry& e, const std::string&, const std::string& where) {
            TaskExample x;
            x.target = Required(e.text, "text", where, "text");
            return x;
          }}, "plain language-model data");
    return r;
  }();
  return registry;
}

int Occurrences(const std::string& text, const std::string& what) {
  int count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++count;
  return count;
}

}  // namespace

std::vector<std::string> TaskNames() { return Tasks().Names(); }

const std::string& DefaultPromptTemplate(const std::string& task) { return Tasks().Get(task).prompt; }

void CheckPromptTemplate(const std::string& task, const std::string& prompt_template) {
  const Task& t = Tasks().Get(task);
  const int speech = Occurrences(prompt_template, "<speech>");
  const int images = Occurrences(prompt_template, "<image>");
  Check(speech == t.speech && images == t.images, "task '", task, "': prompt template \"",
        prompt_template, "\" has ", speech, " <speech> and ", images, " <image> placeholder(s); the task needs ",
        t.speech, " and ", t.images);
}

TaskExample BuildTaskExample(const std::string& task, const std::string& prompt_template,
                             const manifest::Entry& entry, const std::string& base_dir,
                             const std::string& where) {
  TaskExample x = Tasks().Get(task).build(entry, base_dir, where);
  x.prompt = prompt_template;
  const std::string key = "{question}";
  for (size_t at = x.prompt.find(key); at != std::string::npos; at = x.prompt.find(key, at)) {
    x.prompt.replace(at, key.size(), entry.prompt);
    at += entry.prompt.size();
  }
  return x;
}

}  // namespace slm::train
