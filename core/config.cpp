#include "core/config.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/strings.h"

namespace slm::config {
namespace detail {

std::string Describe(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a map";
  return "nothing";
}

}  // namespace detail

namespace {

std::string MarkOf(const detail::State& state, const std::string& path, const YAML::Node& node) {
  // The most specific override wins: "--set a.b=1" explains a.b and everything under it.
  for (std::string p = path;; ) {
    auto it = state.overrides.find(p);
    if (it != state.overrides.end()) return it->second;
    const size_t dot = p.rfind('.');
    if (dot == std::string::npos) break;
    p = p.substr(0, dot);
  }
  // A key that only exists because an override created it ("--set a.b=1" creates 'a').
  for (const auto& [override_path, assignment] : state.overrides)
    if (override_path.compare(0, path.size() + 1, path + ".") == 0) return assignment;
  if (node && node.Mark().line >= 0) return Str(state.source, ":", node.Mark().line + 1);
  return state.source;
}

// The most values (map entries and list items) a document may hold, counting each use of an alias
// separately. Aliases share nodes, so a few hundred bytes of nested anchors ("billion laughs")
// stand for billions of values, and every walk over the tree (this check, unknown keys, reading a
// list) would take that long. Real configs hold hundreds.
constexpr size_t kMaxValues = 100000;

// yaml-cpp accepts duplicate map keys silently; a strict config must not. Keys are also the parts
// of dotted paths ("a.b", "sources[2]": --set, the effective config, messages), so a key must be
// a non-empty string without '.', '[' or ']', or its value could not be addressed or saved back.
void CheckTree(const YAML::Node& node, const std::string& source, const std::string& path,
               size_t& values) {
  if (++values > kMaxValues)
    throw Error(Str("config error: ", source, ": more than ", kMaxValues, " values (at '", path,
                    "'); aliases of aliases expand to copies"));
  if (node.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
      const std::string full = path.empty() ? key : path + "." + key;
      const std::string where = Str("config error: ", source, ":", kv.first.Mark().line + 1, ": ");
      if (!kv.first.IsScalar() || key.empty())
        throw Error(Str(where, "a key under '", path, "' is ", detail::Describe(kv.first),
                        "; keys must be non-empty strings"));
      if (key.find_first_of(".[]") != std::string::npos)
        throw Error(Str(where, "key '", full, "' contains '.', '[' or ']', which separate the ",
                        "parts of config paths"));
      if (!seen.insert(key).second) throw Error(Str(where, "key '", full, "' appears twice"));
      CheckTree(kv.second, source, full, values);
    }
  } else if (node.IsSequence()) {
    size_t i = 0;
    for (const auto& item : node) CheckTree(item, source, Str(path, "[", i++, "]"), values);
  }
}

// The largest list index a path may name (a list of that many config items is absurd already).
constexpr int64_t kMaxListIndex = 99999;

// "sources[2]" -> {"sources", 2}; "lr" -> {"lr", -1}: Node::List names its items that way.
// nullopt for anything else ("a[", "a[x]", "a[-1]", "[1]", "a]", an index above kMaxListIndex).
std::optional<std::pair<std::string, int64_t>> ParsePart(const std::string& part) {
  const size_t open = part.find('[');
  if (open == std::string::npos)
    return part.empty() || part.find(']') != std::string::npos
               ? std::nullopt
               : std::make_optional(std::make_pair(part, int64_t{-1}));
  const std::string digits = part.substr(open + 1, part.size() - open - 2);
  if (open == 0 || part.back() != ']' || digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != std::string::npos ||
      part.find_first_of("[]", open + 1) != part.size() - 1)
    return std::nullopt;
  return std::make_pair(part.substr(0, open), std::stoll(digits));
}

std::pair<std::string, int64_t> SplitIndex(const std::string& part) {
  const auto parsed = ParsePart(part);
  // Paths come from validated keys (CheckTree, ApplyOverride) and Node::List's "key[i]".
  if (!parsed) throw Error(Str("config error: internal: malformed key path part '", part, "'"));
  return *parsed;
}

// yaml-cpp nodes are handles with reference semantics: assigning one Node variable to another
// rewrites the node it refers to. So the walk never reassigns a handle; each level is a fresh one.
// A list item's path ("data.train[0].manifest") rebuilds a sequence of maps, so the effective
// config loads again as it was written.
void SetPath(YAML::Node node, const std::vector<std::string>& parts, size_t index,
             const YAML::Node& value) {
  const auto [name, item] = SplitIndex(parts[index]);
  const bool last = index + 1 == parts.size();
  if (item < 0) {
    if (last) {
      node[name] = value;
      return;
    }
    if (!node[name].IsMap()) node[name] = YAML::Node(YAML::NodeType::Map);
    SetPath(node[name], parts, index + 1, value);
    return;
  }
  if (!node[name].IsSequence()) node[name] = YAML::Node(YAML::NodeType::Sequence);
  YAML::Node list = node[name];
  while (static_cast<int64_t>(list.size()) <= item) list.push_back(YAML::Node(YAML::NodeType::Map));
  if (last) {
    list[static_cast<size_t>(item)] = value;
    return;
  }
  SetPath(list[static_cast<size_t>(item)], parts, index + 1, value);
}

void SetPath(YAML::Node root, const std::vector<std::string>& parts, const YAML::Node& value) {
  SetPath(std::move(root), parts, 0, value);
}

std::shared_ptr<detail::State> MakeState(YAML::Node root, std::string source) {
  auto state = std::make_shared<detail::State>();
  state->source = std::move(source);
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap())
    throw Error(Str("config error: ", state->source, ": the top level must be a map of keys"));
  size_t values = 0;
  CheckTree(root, state->source, "", values);
  state->root = root;
  return state;
}

}  // namespace

YAML::Node Node::Get(const std::string& key) const {
  state_->consumed.insert(Join(key));
  if (!node_ || !node_.IsMap()) return YAML::Node();
  // const access: never inserts a key into the document.
  const YAML::Node& cnode = node_;
  return cnode[key];
}

bool Node::Has(const std::string& key) const {
  if (!node_ || !node_.IsMap()) return false;
  const YAML::Node& cnode = node_;
  YAML::Node v = cnode[key];
  return v && !v.IsNull();
}

void Node::Record(const std::string& key, const YAML::Node& value) {
  SetPath(state_->effective, Split(Join(key), "."), YAML::Clone(value));
}

std::string Node::Where(const std::string& key) const {
  const YAML::Node& cnode = node_;
  YAML::Node v = (node_ && node_.IsMap()) ? cnode[key] : YAML::Node();
  return MarkOf(*state_, Join(key), v ? v : node_);
}

void Node::Fail(const std::string& key, const std::string& message) const {
  throw Error(Str("config error: ", Where(key), ": key '", Join(key), "' ", message));
}

Node Node::Child(const std::string& key) {
  YAML::Node raw = Get(key);
  if (raw && !raw.IsNull() && !raw.IsMap())
    Fail(key, Str("expected a map of keys, got ", detail::Describe(raw)));
  return Node(state_, raw && raw.IsMap() ? raw : YAML::Node(YAML::NodeType::Map), Join(key));
}

std::vector<Node> Node::List(const std::string& key) {
  YAML::Node raw = Get(key);
  std::vector<Node> items;
  if (!raw || raw.IsNull()) return items;
  if (!raw.IsSequence()) Fail(key, Str("expected a list, got ", detail::Describe(raw)));
  for (size_t i = 0; i < raw.size(); ++i) {
    const std::string path = Str(Join(key), "[", i, "]");
    if (!raw[i].IsMap())
      throw Error(Str("config error: ", MarkOf(*state_, path, raw[i]), ": '", path,
                      "' must be a map of keys, got ", detail::Describe(raw[i])));
    state_->consumed.insert(path);
    items.push_back(Node(state_, raw[i], path));
  }
  return items;
}

std::vector<std::string> Node::Keys() const {
  std::vector<std::string> keys;
  if (node_ && node_.IsMap())
    for (const auto& kv : node_) keys.push_back(kv.first.Scalar());
  return keys;
}

Document Document::LoadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(Str("config error: cannot open '", path, "'"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return LoadString(buffer.str(), path);
}

Document Document::LoadString(const std::string& text, const std::string& source_name) {
  // yaml-cpp keeps invalid UTF-8 in scalars but its emitter writes U+FFFD in their place, so the
  // effective config saved with a run would silently differ from the one used.
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string::npos) {
    const size_t line = 1 + std::count(text.begin(), text.begin() + bad, '\n');
    throw Error(Str("config error: ", source_name, ":", line, ": not valid UTF-8 (byte ", bad,
                    "); YAML configs must be UTF-8 text"));
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw Error(Str("config error: ", source_name, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  return Document(MakeState(root, source_name));
}

Document Document::FromNode(YAML::Node root, const std::string& source_name) {
  return Document(MakeState(root, source_name));
}

Document Document::Empty(const std::string& source_name) {
  return Document(MakeState(YAML::Node(YAML::NodeType::Map), source_name));
}

void Document::ApplyOverride(const std::string& assignment) {
  if (const size_t bad = FindInvalidUtf8(assignment); bad != std::string::npos)
    throw Error(Str("config error: --set '", assignment, "': not valid UTF-8 (byte ", bad, ")"));
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error(Str("config error: --set '", assignment, "' must look like key.path=value"));
  const std::string path = Trim(assignment.substr(0, eq));
  const std::vector<std::string> parts = Split(path, ".");
  if (parts.empty() || Join(parts, ".") != path)
    throw Error(Str("config error: --set '", assignment, "': malformed key path '", path, "'"));
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::ParserException& e) {
    throw Error(Str("config error: --set '", assignment, "': invalid value: ", e.msg));
  }
  size_t values = 0;
  CheckTree(value, Str("--set '", assignment, "'"), path, values);
  // Walk the existing tree before changing it: every part must be `key` or `key[index]`; an
  // intermediate key that holds a scalar cannot take a child; an index may name an item of the
  // list or append one, never leave a gap of empty items.
  YAML::Node cursor = state_->root;
  bool exists = true;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto part = ParsePart(parts[i]);
    const std::string so_far = Join(std::vector<std::string>(parts.begin(), parts.begin() + i + 1), ".");
    if (!part)
      throw Error(Str("config error: --set '", assignment, "': malformed key '", parts[i],
                      "' (keys look like name or name[index], index 0..", kMaxListIndex, ")"));
    const auto& [name, index] = *part;
    if (i > 0 && exists && !cursor.IsMap())
      throw Error(Str("config error: --set '", assignment, "': '", Join(std::vector<std::string>(
                      parts.begin(), parts.begin() + i), "."), "' is not a map"));
    YAML::Node next;
    if (exists && cursor.IsMap()) {
      const YAML::Node& ccursor = cursor;
      const YAML::Node found = ccursor[name];  // an absent key gives an invalid node: no reset()
      if (found) next.reset(found);
    }
    if (index >= 0) {
      if (next.IsDefined() && !next.IsNull() && !next.IsSequence())
        throw Error(Str("config error: --set '", assignment, "': '",
                        Join(std::vector<std::string>(parts.begin(), parts.begin() + i), "."),
                        i ? "." : "", name, "' is not a list"));
      const int64_t size = next.IsDefined() && next.IsSequence() ? static_cast<int64_t>(next.size()) : 0;
      if (index > size)
        throw Error(Str("config error: --set '", assignment, "': '", so_far, "' is past the end of ",
                        "the list (", size, " items): an override can change an item or append one"));
      YAML::Node item;
      if (index < size) {
        const YAML::Node& cnext = next;
        item.reset(cnext[static_cast<size_t>(index)]);
      }
      next.reset(item);
    }
    exists = next.IsDefined() && !next.IsNull();
    cursor.reset(next);  // rebind the handle; `cursor = next` would overwrite the tree
  }
  SetPath(state_->root, parts, value);
  state_->overrides[path] = "--set " + assignment;
}

void Document::ApplyOverrides(const std::vector<std::string>& assignments) {
  for (const auto& a : assignments) ApplyOverride(a);
}

Node Document::Root() { return Node(state_, state_->root, ""); }

namespace {
void FindUnconsumed(const detail::State& state, const YAML::Node& node, const std::string& path) {
  if (!node.IsMap()) return;
  std::vector<std::string> siblings;
  for (const auto& kv : node) {
    const std::string full = path.empty() ? kv.first.Scalar() : path + "." + kv.first.Scalar();
    if (state.consumed.count(full)) siblings.push_back(kv.first.Scalar());
  }
  // Known keys at this level include ones that were read but absent from the document.
  const std::string prefix = path.empty() ? "" : path + ".";
  for (const auto& c : state.consumed) {
    if (c.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = c.substr(prefix.size());
    if (!rest.empty() && rest.find('.') == std::string::npos && rest.find('[') == std::string::npos)
      siblings.push_back(rest);
  }
  for (const auto& kv : node) {
    const std::string key = kv.first.Scalar();
    const std::string full = path.empty() ? key : path + "." + key;
    if (!state.consumed.count(full)) {
      std::string message = Str("config error: ", MarkOf(state, full, kv.first), ": unknown key '",
                                full, "'");
      const std::string hint = ClosestMatch(key, siblings);
      if (!hint.empty()) message += Str(" (did you mean '", prefix, hint, "'?)");
      throw Error(message);
    }
    if (kv.second.IsMap()) FindUnconsumed(state, kv.second, full);
    if (kv.second.IsSequence()) {
      for (size_t i = 0; i < kv.second.size(); ++i)
        if (kv.second[i].IsMap()) FindUnconsumed(state, kv.second[i], Str(full, "[", i, "]"));
    }
  }
}
}  // namespace

void Document::CheckAllConsumed() const { FindUnconsumed(*state_, state_->root, ""); }

void Document::CheckAllConsumed(const std::string& path) const {
  YAML::Node node = state_->root;
  for (const std::string& part : Split(path, ".")) {
    if (!node.IsMap() || !node[part]) return;  // an absent section has no unknown keys
    const YAML::Node child = node[part];
    node.reset(child);  // rebind the handle; operator= would overwrite the tree's node
  }
  FindUnconsumed(*state_, node, path);
}

YAML::Node Document::Effective() const { return YAML::Clone(state_->effective); }

std::string Document::EffectiveYaml() const {
  YAML::Emitter out;
  out << state_->effective;
  return std::string(out.c_str()) + "\n";
}

const std::string& Document::Source() const { return state_->source; }

}  // namespace slm::config
