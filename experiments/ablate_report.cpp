#include "experiments/ablate_report.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"

namespace slm::experiments {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Significant(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.4g", value);
  return buffer;
}

// Round-trip precision for the CSV, so that analysis scripts see the numbers the runs produced.
std::string Shortest(double value) {
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

double Mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return sum / values.size();
}

// "mean ± sample std" over seeds; the spread is what tells a real difference between cells from noise.
std::string MeanStd(const std::vector<double>& values) {
  if (values.empty()) return "–";
  const double mean = Mean(values);
  if (values.size() == 1) return Significant(mean);
  double squares = 0;
  for (double v : values) squares += (v - mean) * (v - mean);
  return Significant(mean) + " ± " + Significant(std::sqrt(squares / (values.size() - 1)));
}

std::string CsvLine(std::initializer_list<std::string> fields) {
  std::string line;
  for (const auto& field : fields) {
    if (&field != fields.begin()) line += ',';
    if (field.find_first_of(",\"\r\n") == std::string::npos) {
      line += field;
      continue;
    }
    line += '"';
    for (char ch : field) line += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    line += '"';
  }
  return line + "\n";
}

bool IsReplay(const std::string& cell) { return cell.rfind("replay", 0) == 0; }

// "replay_0.05+l2" -> "replay+l2": cells that differ only in the ratio form one line over the ratio.
std::string ReplayFamily(const std::string& cell) {
  size_t i = std::string("replay").size();
  if (i < cell.size() && cell[i] == '_') ++i;
  while (i < cell.size() && (std::isdigit(static_cast<unsigned char>(cell[i])) || cell[i] == '.')) ++i;
  return "replay" + cell.substr(i);
}

struct Cell {
  std::string name;
  double replay_ratio = 0;
  int runs = 0;
  std::vector<const ForgettingReport*> ok;
};

std::vector<Cell> GroupCells(const std::vector<AblationRun>& runs) {
  std::vector<Cell> cells;
  for (const auto& run : runs) {
    auto it = std::find_if(cells.begin(), cells.end(), [&](const Cell& c) { return c.name == run.cell; });
    if (it == cells.end()) it = cells.insert(cells.end(), Cell{run.cell, run.replay_ratio, 0, {}});
    ++it->runs;
    if (run.status == "ok") it->ok.push_back(&run.report);
  }
  return cells;
}

std::vector<double> Defined(const std::vector<const ForgettingReport*>& reports,
                            const std::function<std::optional<double>(const ForgettingReport&)>& get) {
  std::vector<double> values;
  for (const auto* report : reports) {
    if (const auto v = get(*report)) values.push_back(*v);
  }
  return values;
}

std::optional<double> MeanForgetting(const ForgettingReport& r) { return r.mean_forgetting; }
std::optional<double> Bwt(const ForgettingReport& r) { return r.backward_transfer; }

// A column across runs: the source key identifies it; label and metric come from its first report.
struct Column {
  std::string key, label;
  TaskMetric metric;
  std::string Heading() const { return label + " " + metric.metric + (metric.higher_is_better ? " ↑" : " ↓"); }
};

std::vector<Column> UnionColumns(const std::vector<AblationRun>& runs) {
  std::vector<Column> columns;
  for (const auto& run : runs) {
    if (run.status != "ok") continue;
    const auto& r = run.report;
    for (size_t c = 0; c < r.columns.size(); ++c) {
      if (std::find_if(columns.begin(), columns.end(), [&](const Column& x) { return x.key == r.columns[c]; }) == columns.end())
        columns.push_back({r.columns[c], r.labels[c], r.metrics[c]});
    }
  }
  return columns;
}

int IndexOf(const std::vector<std::string>& items, const std::string& item) {
  const auto it = std::find(items.begin(), items.end(), item);
  return it == items.end() ? -1 : static_cast<int>(it - items.begin());
}

// --- Line charts --------------------------------------------------------------------------------

constexpr int kWidth = 800, kHeight = 500;
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr double kSmall = 0.45;
const cv::Scalar kInk(40, 40, 40), kGrid(225, 225, 225), kReference(90, 90, 90);
// Tableau 10 in BGR (distinct hues that stay apart for the colour-blind), then black and olive so
// that a grid of up to 12 cells (the default has 11) needs no colour twice.
const cv::Scalar kPalette[] = {{180, 119, 31}, {14, 127, 255},  {44, 160, 44},   {40, 39, 214},
                               {189, 103, 148}, {75, 86, 140},  {194, 119, 227}, {127, 127, 127},
                               {34, 189, 188}, {207, 190, 23}, {0, 0, 0},       {0, 110, 110}};
constexpr size_t kColours = sizeof(kPalette) / sizeof(kPalette[0]);

using Series = PlotSeries;  // a non-finite y is no point; lines join only neighbouring points

struct Chart {
  std::string title, x_label, y_label;
  std::vector<std::string> categories;  // when set, x is an index into these and they label the ticks
  std::vector<Series> series;
  std::optional<std::pair<std::string, double>> reference;  // legend name, y: a dashed horizontal line
  std::vector<std::pair<std::string, double>> boundaries;   // label, x: dashed vertical lines (stage starts)
};

struct Axis {
  double lo = 0, hi = 1;
  std::vector<std::pair<double, std::string>> ticks;
};

int TextWidth(const std::string& text, double scale) {
  int baseline = 0;
  return cv::getTextSize(text, kFont, scale, 1, &baseline).width;
}

std::string Fit(std::string text, int width, double scale) {
  if (TextWidth(text, scale) <= width) return text;
  while (!text.empty() && TextWidth(text + "..", scale) > width) text.pop_back();
  return text + "..";
}

// align: -1 = starts at `at`, 0 = centred on it, 1 = ends at it.
void Text(cv::Mat& image, const std::string& text, cv::Point at, int align = -1, double scale = kSmall) {
  at.x -= (align + 1) * TextWidth(text, scale) / 2;
  cv::putText(image, text, at, kFont, scale, kInk, 1, cv::LINE_AA);
}

void DashedLine(cv::Mat& image, cv::Point a, cv::Point b, const cv::Scalar& colour) {
  const double length = cv::norm(b - a);
  for (double s = 0; s < length; s += 14)
    cv::line(image, a + (b - a) * (s / length), a + (b - a) * (std::min(s + 8, length) / length), colour, 2,
             cv::LINE_AA);
}

// About five ticks at 1, 2 or 5 x 10^k, covering [lo, hi].
Axis NiceAxis(double lo, double hi) {
  if (!(lo < hi)) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / 5;
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  const double f = raw / magnitude;
  const double step = magnitude * (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10);
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  Axis axis{std::floor(lo / step) * step, std::ceil(hi / step) * step, {}};
  const int count = static_cast<int>(std::lround((axis.hi - axis.lo) / step));
  for (int i = 0; i <= count; ++i) {
    double v = axis.lo + i * step;
    if (std::abs(v) < step * 1e-9) v = 0;  // no "-0.00"
    char label[32];
    std::snprintf(label, sizeof(label), "%.*f", decimals, v);
    axis.ticks.emplace_back(v, label);
  }
  return axis;
}

cv::Mat DrawChart(const Chart& chart) {
  cv::Mat image(kHeight, kWidth, CV_8UC3, cv::Scalar::all(255));
  std::vector<const Series*> drawn;
  std::vector<double> xs, ys;
  for (const auto& s : chart.series) {
    const size_t before = ys.size();
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) xs.push_back(s.x[i]), ys.push_back(s.y[i]);
    }
    if (ys.size() > before) drawn.push_back(&s);
  }
  const bool has_reference = chart.reference && std::isfinite(chart.reference->second);
  if (has_reference) ys.push_back(chart.reference->second);

  const auto [y_min, y_max] = ys.empty() ? std::pair(0.0, 1.0) : std::pair(*std::min_element(ys.begin(), ys.end()),
                                                                          *std::max_element(ys.begin(), ys.end()));
  const Axis y_axis = NiceAxis(y_min, y_max);
  Axis x_axis;
  if (!chart.categories.empty()) {
    x_axis = {-0.5, chart.categories.size() - 0.5, {}};
    for (size_t i = 0; i < chart.categories.size(); ++i) x_axis.ticks.emplace_back(i, chart.categories[i]);
  } else {
    x_axis = xs.empty() ? NiceAxis(0, 1) : NiceAxis(*std::min_element(xs.begin(), xs.end()), *std::max_element(xs.begin(), xs.end()));
  }

  struct Entry {
    std::string name;
    cv::Scalar colour;
    bool dashed;
  };
  std::vector<Entry> legend;
  for (size_t i = 0; i < drawn.size(); ++i) legend.push_back({drawn[i]->name, kPalette[i % kColours], false});
  if (has_reference) legend.push_back({chart.reference->first, kReference, true});
  int legend_text = 0;
  for (auto& entry : legend) {
    entry.name = Fit(entry.name, 200, kSmall);
    legend_text = std::max(legend_text, TextWidth(entry.name, kSmall));
  }
  const int legend_width = legend.empty() ? 0 : legend_text + 48;
  int tick_width = 0;
  for (const auto& tick : y_axis.ticks) tick_width = std::max(tick_width, TextWidth(tick.second, kSmall));
  const cv::Rect plot(tick_width + 18, 64, kWidth - legend_width - 40 - tick_width, kHeight - 64 - 60);
  const int right = plot.x + plot.width, bottom = plot.y + plot.height;
  // Data sit kInset pixels inside the axes, so that markers at the range ends are not cut by them.
  constexpr int kInset = 10;
  auto px = [&](double x) {
    return plot.x + kInset +
           static_cast<int>(std::lround((x - x_axis.lo) / (x_axis.hi - x_axis.lo) * (plot.width - 2 * kInset)));
  };
  auto py = [&](double y) {
    return bottom - kInset -
           static_cast<int>(std::lround((y - y_axis.lo) / (y_axis.hi - y_axis.lo) * (plot.height - 2 * kInset)));
  };

  Text(image, Fit(chart.title, kWidth - 20, 0.6), {kWidth / 2, 28}, 0, 0.6);
  Text(image, chart.y_label, {plot.x, plot.y - 14});
  for (const auto& [v, label] : y_axis.ticks) {
    cv::line(image, {plot.x, py(v)}, {right, py(v)}, kGrid, 1);
    Text(image, label, {plot.x - 6, py(v) + 5}, 1);
  }
  const int spacing = plot.width / std::max<int>(1, x_axis.ticks.size()) - 6;
  for (const auto& [v, label] : x_axis.ticks) {
    cv::line(image, {px(v), plot.y}, {px(v), bottom}, kGrid, 1);
    Text(image, Fit(label, spacing, kSmall), {px(v), bottom + 20}, 0);
  }
  cv::line(image, {plot.x, plot.y}, {plot.x, bottom}, kInk, 1);
  cv::line(image, {plot.x, bottom}, {right, bottom}, kInk, 1);
  Text(image, chart.x_label, {plot.x + plot.width / 2, bottom + 46}, 0);
  if (drawn.empty() && !has_reference) Text(image, "no data", {plot.x + plot.width / 2, plot.y + plot.height / 2}, 0);

  if (has_reference) DashedLine(image, {plot.x, py(chart.reference->second)}, {right, py(chart.reference->second)},
                                kReference);
  for (const auto& [label, x] : chart.boundaries) {
    if (!std::isfinite(x) || x < x_axis.lo || x > x_axis.hi) continue;
    DashedLine(image, {px(x), plot.y}, {px(x), bottom}, kReference);
    Text(image, label, {px(x) + 4, plot.y + 14});
  }
  for (size_t k = 0; k < drawn.size(); ++k) {
    const Series& s = *drawn[k];
    auto point = [&](size_t i) { return cv::Point(px(s.x[i]), py(s.y[i])); };
    auto finite = [&](size_t i) { return std::isfinite(s.x[i]) && std::isfinite(s.y[i]); };
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!finite(i)) continue;
      if (i > 0 && finite(i - 1)) cv::line(image, point(i - 1), point(i), kPalette[k % kColours], 2, cv::LINE_AA);
      cv::circle(image, point(i), 4, kPalette[k % kColours], cv::FILLED, cv::LINE_AA);
    }
  }

  if (!legend.empty()) {
    const int x0 = right + 16;
    cv::rectangle(image, {x0, plot.y}, {x0 + legend_width, plot.y + 10 + 22 * static_cast<int>(legend.size())},
                  kGrid, 1);
    for (size_t i = 0; i < legend.size(); ++i) {
      const int y = plot.y + 20 + 22 * static_cast<int>(i);
      if (legend[i].dashed) {
        DashedLine(image, {x0 + 8, y}, {x0 + 32, y}, legend[i].colour);
      } else {
        cv::line(image, {x0 + 8, y}, {x0 + 32, y}, legend[i].colour, 2, cv::LINE_AA);
        cv::circle(image, {x0 + 20, y}, 4, legend[i].colour, cv::FILLED, cv::LINE_AA);
      }
      Text(image, legend[i].name, {x0 + 40, y + 5});
    }
  }
  return image;
}

void WritePng(const std::string& path, const cv::Mat& image) {
  std::vector<uchar> bytes;
  Check(cv::imencode(".png", image, bytes), "cannot encode the plot ", path, " as PNG");
  fs::AtomicWriteString(path, std::string(bytes.begin(), bytes.end()));
}

std::string FileStem(const std::string& label) {
  std::string out;
  for (char ch : label) {
    if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-') {
      out += ch;
    } else if (!out.empty() && out.back() != '_') {
      out += '_';
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out.empty() ? "column" : out;
}

}  // namespace

void WriteLineChart(const std::string& path, const std::string& title, const std::string& x_label,
                    const std::string& y_label, const std::vector<PlotSeries>& series,
                    const std::vector<std::pair<std::string, double>>& boundaries) {
  Chart chart;
  chart.title = title;
  chart.x_label = x_label;
  chart.y_label = y_label;
  chart.series = series;
  chart.boundaries = boundaries;
  WritePng(path, DrawChart(chart));
}

std::vector<std::string> WriteAblationReport(const std::string& dir, const std::vector<AblationRun>& runs,
                                             const std::string& agreement_paragraph) {
  fs::MakeDirs(dir);
  auto path = [&](const std::string& name) { return (std::filesystem::path(dir) / name).string(); };
  std::vector<std::string> written;
  const auto cells = GroupCells(runs);
  const auto columns = UnionColumns(runs);

  std::string csv = CsvLine({"cell", "mitigation", "replay_ratio", "seed", "status", "stage", "stage_index", "column",
                             "task", "metric", "higher_is_better", "value"});
  for (const auto& run : runs) {
    const std::string ratio = Shortest(run.replay_ratio), seed = std::to_string(run.seed);
    if (run.status != "ok") {
      csv += CsvLine({run.cell, run.mitigation, ratio, seed, run.status, "", "", "", "", "", "", ""});
      continue;
    }
    const auto& r = run.report;
    for (size_t row = 0; row < r.values.size(); ++row) {
      for (size_t c = 0; c < r.columns.size(); ++c) {
        if (!r.values[row][c]) continue;
        csv += CsvLine({run.cell, run.mitigation, ratio, seed, run.status, r.stages[row], std::to_string(row),
                        r.columns[c], r.tasks[c], r.metrics[c].metric,
                        r.metrics[c].higher_is_better ? "true" : "false", Shortest(*r.values[row][c])});
      }
    }
  }
  fs::AtomicWriteString(path("results.csv"), csv);
  written.push_back(path("results.csv"));

  std::vector<std::pair<std::string, std::string>> plots;  // file name, caption
  std::vector<std::string> stages;
  for (const auto& cell : cells) {
    for (const auto* report : cell.ok) {
      for (const auto& stage : report->stages) {
        if (IndexOf(stages, stage) < 0) stages.push_back(stage);
      }
    }
  }
  std::set<std::string> names;
  for (const auto& column : columns) {
    const char* direction = column.metric.higher_is_better ? "higher is better" : "lower is better";
    Chart chart{Str(column.label, ": ", column.metric.metric, " after each stage (", direction, ")"), "stage",
                column.metric.metric, stages, {}, {}};
    for (const auto& cell : cells) {
      Series& series = chart.series.emplace_back(Series{cell.name, {}, {}});
      for (size_t i = 0; i < stages.size(); ++i) {
        const auto values = Defined(cell.ok, [&](const ForgettingReport& r) -> std::optional<double> {
          const int row = IndexOf(r.stages, stages[i]), c = IndexOf(r.columns, column.key);
          return row < 0 || c < 0 ? std::nullopt : r.values[row][c];
        });
        series.x.push_back(i);
        series.y.push_back(values.empty() ? kNaN : Mean(values));
      }
    }
    const std::string stem = "stages_" + FileStem(column.label);
    std::string name = stem + ".png";
    // Distinct labels can sanitise to one name; a plot must not overwrite another.
    for (int k = 2; names.count(name); ++k) name = Str(stem, "_", k, ".png");
    names.insert(name);
    WritePng(path(name), DrawChart(chart));
    written.push_back(path(name));
    plots.emplace_back(name, chart.title);
  }

  Chart replay{"mean relative forgetting vs replay ratio (lower is better)", "replay ratio", "mean relative forgetting", {}, {}, {}};
  for (const auto& cell : cells) {
    const auto values = Defined(cell.ok, MeanForgetting);
    if (values.empty()) continue;
    if (cell.name == "none") replay.reference = {{"none", Mean(values)}};
    if (!IsReplay(cell.name)) continue;
    const std::string family = ReplayFamily(cell.name);
    auto it = std::find_if(replay.series.begin(), replay.series.end(), [&](const Series& x) { return x.name == family; });
    if (it == replay.series.end()) it = replay.series.insert(replay.series.end(), Series{family, {}, {}});
    const auto at = std::upper_bound(it->x.begin(), it->x.end(), cell.replay_ratio);  // keep x sorted for the line
    it->y.insert(it->y.begin() + (at - it->x.begin()), Mean(values));
    it->x.insert(at, cell.replay_ratio);
  }
  if (!replay.series.empty()) {
    WritePng(path("forgetting_vs_replay.png"), DrawChart(replay));
    written.push_back(path("forgetting_vs_replay.png"));
    plots.emplace_back("forgetting_vs_replay.png", replay.title);
  }

  std::ostringstream md;
  md << "# Forgetting ablation\n\n"
     << "How to read: each cell is one mitigation setting run with several seeds; values are mean ± sample standard "
        "deviation over its finished seeds, in each metric's own units (↓ lower is better, ↑ higher is better). "
        "Forgetting = how much worse a task ended than its best earlier value (positive = forgot); BWT = change from "
        "the stage that introduced a task to the end (positive = improved). Mean forgetting and BWT are relative "
        "(each task's change as a fraction of its best / introducing value, averaged over tasks), so tasks on "
        "different scales weigh alike; the forgetting table is in each metric's units.\n\n"
     << "## Final values (after the last stage)\n\n| cell | ok runs |";
  for (const auto& column : columns) md << " " << column.Heading() << " |";
  md << " mean relative forgetting ↓ | relative BWT ↑ |\n|---|---|";
  for (size_t c = 0; c < columns.size() + 2; ++c) md << "---|";
  md << "\n";
  for (const auto& cell : cells) {
    md << "| " << cell.name << " | " << cell.ok.size() << "/" << cell.runs << " |";
    for (const auto& column : columns) {
      md << " " << MeanStd(Defined(cell.ok, [&](const ForgettingReport& r) -> std::optional<double> {
        const int c = IndexOf(r.columns, column.key);
        return c < 0 ? std::nullopt : r.values.back()[c];
      })) << " |";
    }
    md << " " << MeanStd(Defined(cell.ok, MeanForgetting)) << " | " << MeanStd(Defined(cell.ok, Bwt)) << " |\n";
  }

  md << "\n## Forgetting per task (positive = forgot)\n\n| cell |";
  for (const auto& column : columns) md << " " << column.Heading() << " |";
  md << "\n|---|";
  for (size_t c = 0; c < columns.size(); ++c) md << "---|";
  md << "\n";
  for (const auto& cell : cells) {
    md << "| " << cell.name << " |";
    for (const auto& column : columns) {
      md << " " << MeanStd(Defined(cell.ok, [&](const ForgettingReport& r) -> std::optional<double> {
        const int c = IndexOf(r.columns, column.key);
        return c < 0 ? std::nullopt : r.forgetting[c];
      })) << " |";
    }
    md << "\n";
  }

  md << "\n## Failed cells\n\n";
  bool any_failed = false;
  for (const auto& run : runs) {
    if (run.status == "ok") continue;
    any_failed = true;
    md << "- " << run.cell << ", seed " << run.seed << ": " << (run.error.empty() ? run.status : run.error)
       << " (log: `" << run.log << "`)\n";
  }
  if (!any_failed) md << "none\n";
  md << "\n## Agreement with the study\n\n" << agreement_paragraph << "\n\n## Plots\n\n";
  for (const auto& [name, caption] : plots)
    md << "- [" << name << "](" << name << ")\n\n  ![" << caption << "](" << name << ")\n";
  if (plots.empty()) md << "none (no finished run)\n";
  fs::AtomicWriteString(path("report.md"), md.str());
  written.push_back(path("report.md"));
  return written;
}

std::string StudyAgreement(const std::vector<AblationRun>& runs) {
  struct Score {
    std::string cell;
    double forgetting;
    std::optional<double> bwt;
  };
  std::vector<Score> scores;  // input order
  std::vector<std::string> unscored;
  for (const auto& cell : GroupCells(runs)) {
    const auto forgetting = Defined(cell.ok, MeanForgetting), bwt = Defined(cell.ok, Bwt);
    if (forgetting.empty()) {
      unscored.push_back(cell.name);
    } else {
      scores.push_back({cell.name, Mean(forgetting), bwt.empty() ? std::nullopt : std::optional(Mean(bwt))});
    }
  }
  auto find = [&](const std::string& name) {
    const auto it = std::find_if(scores.begin(), scores.end(), [&](const Score& x) { return x.cell == name; });
    return it == scores.end() ? nullptr : &*it;
  };
  auto quote = [](const Score& s) { return Str(s.cell, " (", Significant(s.forgetting), ")"); };

  std::ostringstream out;
  out << "The study (\"Analyzing Mitigation Strategies for Catastrophic Forgetting in End-to-End Training of Spoken "
         "Language Models\", 2025) found experience replay the most effective single mitigation, and combinations "
         "with replay better still.";
  if (!unscored.empty()) {
    out << " Not compared (no finished run with a defined forgetting): ";
    for (size_t i = 0; i < unscored.size(); ++i) out << (i ? ", " : "") << unscored[i];
    out << ".";
  }
  if (scores.empty()) return out.str() + " Our results could not be compared with the study.";

  auto by_forgetting = scores;
  std::stable_sort(by_forgetting.begin(), by_forgetting.end(), [](const Score& a, const Score& b) { return a.forgetting < b.forgetting; });
  out << " Mean relative forgetting (lower is better; over tasks, then seeds): ";
  for (size_t i = 0; i < by_forgetting.size(); ++i) out << (i ? ", " : "") << quote(by_forgetting[i]);
  out << ".";
  std::vector<Score> by_bwt;
  std::copy_if(scores.begin(), scores.end(), std::back_inserter(by_bwt), [](const Score& s) { return s.bwt.has_value(); });
  std::stable_sort(by_bwt.begin(), by_bwt.end(), [](const Score& a, const Score& b) { return *a.bwt > *b.bwt; });
  if (!by_bwt.empty()) {
    out << " Mean relative BWT (higher is better): ";
    for (size_t i = 0; i < by_bwt.size(); ++i)
      out << (i ? ", " : "") << by_bwt[i].cell << " (" << Significant(*by_bwt[i].bwt) << ")";
    out << ".";
  }

  const auto best_replay = std::find_if(by_forgetting.begin(), by_forgetting.end(), [](const Score& s) { return IsReplay(s.cell); });
  const auto best_other = std::find_if(by_forgetting.begin(), by_forgetting.end(), [](const Score& s) { return !IsReplay(s.cell); });
  std::vector<double> checks;  // 1 = as the study found, 0 = not, in between = partly
  if (best_replay == by_forgetting.end()) {
    out << " The best cell is " << quote(by_forgetting.front())
        << "; no replay cell finished, so whether replay is the most effective mitigation could not be checked.";
  } else if (best_other == by_forgetting.end() || best_replay->forgetting < best_other->forgetting) {
    out << " The best cell is " << quote(*best_replay) << ", a replay cell.";
    checks.push_back(1);
  } else {  // a tie counts against replay: the study found it strictly better
    out << " The best cell is " << quote(*best_other) << ", not a replay cell; the best replay cell is "
        << quote(*best_replay) << ".";
    checks.push_back(0);
  }
  if (const Score* none = find("none")) {
    out << " Without mitigation: " << quote(*none) << ".";
  } else {
    out << " There is no finished \"none\" cell, so the gain over no mitigation could not be quoted.";
  }

  int compared = 0, better = 0;
  std::vector<std::string> comparisons, unmatched;
  for (const auto& s : scores) {
    const size_t plus = s.cell.find('+');
    if (!IsReplay(s.cell) || plus == std::string::npos) continue;
    const Score* base = find(s.cell.substr(0, plus));
    if (!base) {
      unmatched.push_back(s.cell);
      continue;
    }
    const bool wins = s.forgetting < base->forgetting;
    ++compared, better += wins;
    comparisons.push_back(Str(quote(s), wins ? " beats " : " does not beat ", quote(*base)));
  }
  if (!comparisons.empty()) {
    out << " Combinations against replay alone: ";
    for (size_t i = 0; i < comparisons.size(); ++i) out << (i ? "; " : "") << comparisons[i];
    out << ".";
  }
  for (const auto& cell : unmatched)
    out << " " << cell << " could not be compared: its replay-only cell " << cell.substr(0, cell.find('+'))
        << " did not finish.";
  if (compared == 0 && unmatched.empty())
    out << " No replay combination (replay_R+X) finished, so whether combining helps could not be checked.";
  if (compared > 0) checks.push_back(static_cast<double>(better) / compared);

  if (checks.empty()) return out.str() + " Our results could not be compared with the study.";
  if (std::all_of(checks.begin(), checks.end(), [](double c) { return c == 1; })) {
    out << " Our results agree with the study" << (checks.size() < 2 ? " as far as they could be compared." : ".");
  } else if (std::all_of(checks.begin(), checks.end(), [](double c) { return c == 0; })) {
    out << " Our results do not agree with the study.";
  } else {
    out << " Our results partly agree with the study.";
  }
  return out.str();
}

}  // namespace slm::experiments
