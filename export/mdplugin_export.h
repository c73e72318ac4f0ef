// The C++ side of the export contract (export/SPEC.md), shared by the LAMMPS pair style and the
// standalone checker: loading an export safely, reading and checking its mdplugin.txt, the element
// table, and the readable part of a TorchScript exception. Header-only, so a LAMMPS source tree needs
// just this file beside the style.
#ifndef MDPLUGIN_EXPORT_H
#define MDPLUGIN_EXPORT_H

#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mdplugin_export {

inline const char *const FORMAT_NAME = "mdplugin-export";
inline const char *const SUPPORTED_FORMAT_VERSIONS = "1, 2 and 3";
inline const char *const METADATA_FILE = "mdplugin.txt";    // flat key=value lines

// A problem with the export file, worded for the user; each client prefixes its own name.
struct ExportError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Element symbols and standard atomic masses (u) by atomic number (index 0 unused).
struct Element {
  const char *symbol;
  double mass;
};
inline const Element ELEMENTS[] = {
    {"", 0.0},
    {"H", 1.008}, {"He", 4.003}, {"Li", 6.940}, {"Be", 9.012}, {"B", 10.810}, {"C", 12.011},
    {"N", 14.007}, {"O", 15.999}, {"F", 18.998}, {"Ne", 20.180}, {"Na", 22.990}, {"Mg", 24.305},
    {"Al", 26.982}, {"Si", 28.085}, {"P", 30.974}, {"S", 32.060}, {"Cl", 35.450}, {"Ar", 39.948},
    {"K", 39.098}, {"Ca", 40.078}, {"Sc", 44.956}, {"Ti", 47.867}, {"V", 50.941}, {"Cr", 51.996},
    {"Mn", 54.938}, {"Fe", 55.845}, {"Co", 58.933}, {"Ni", 58.693}, {"Cu", 63.546}, {"Zn", 65.380},
    {"Ga", 69.723}, {"Ge", 72.630}, {"As", 74.922}, {"Se", 78.971}, {"Br", 79.904}, {"Kr", 83.798},
    {"Rb", 85.468}, {"Sr", 87.620}, {"Y", 88.906}, {"Zr", 91.224}, {"Nb", 92.906}, {"Mo", 95.950},
    {"Tc", 97.907}, {"Ru", 101.070}, {"Rh", 102.906}, {"Pd", 106.420}, {"Ag", 107.868},
    {"Cd", 112.414}, {"In", 114.818}, {"Sn", 118.710}, {"Sb", 121.760}, {"Te", 127.600},
    {"I", 126.904}, {"Xe", 131.293}, {"Cs", 132.905}, {"Ba", 137.327}, {"La", 138.905},
    {"Ce", 140.116}, {"Pr", 140.908}, {"Nd", 144.242}, {"Pm", 144.913}, {"Sm", 150.360},
    {"Eu", 151.964}, {"Gd", 157.250}, {"Tb", 158.925}, {"Dy", 162.500}, {"Ho", 164.930},
    {"Er", 167.259}, {"Tm", 168.934}, {"Yb", 173.054}, {"Lu", 174.967}, {"Hf", 178.490},
    {"Ta", 180.948}, {"W", 183.840}, {"Re", 186.207}, {"Os", 190.230}, {"Ir", 192.217},
    {"Pt", 195.084}, {"Au", 196.967}, {"Hg", 200.592}, {"Tl", 204.380}, {"Pb", 207.200},
    {"Bi", 208.980}, {"Po", 208.982}, {"At", 209.987}, {"Rn", 222.018}, {"Fr", 223.020},
    {"Ra", 226.025}, {"Ac", 227.028}, {"Th", 232.038}, {"Pa", 231.036}, {"U", 238.029},
    {"Np", 237.048}, {"Pu", 244.064}, {"Am", 243.061}, {"Cm", 247.070}, {"Bk", 247.070},
    {"Cf", 251.080}, {"Es", 252.083}, {"Fm", 257.095}, {"Md", 258.098}, {"No", 259.101},
    {"Lr", 262.110}, {"Rf", 267.122}, {"Db", 268.126}, {"Sg", 271.134}, {"Bh", 270.133},
    {"Hs", 269.134}, {"Mt", 278.156}, {"Ds", 281.165}, {"Rg", 281.166}, {"Cn", 285.177},
    {"Nh", 286.182}, {"Fl", 289.190}, {"Mc", 289.194}, {"Lv", 293.204}, {"Ts", 293.208},
    {"Og", 294.214}};
inline constexpr int64_t MAX_ATOMIC_NUMBER = 118;

// 0 for a name that is not an element symbol.
inline int64_t atomic_number_of(const std::string &symbol)
{
  for (int64_t z = 1; z <= MAX_ATOMIC_NUMBER; z++)
    if (symbol == ELEMENTS[z].symbol) return z;
  return 0;
}

inline std::map<std::string, std::string> parse_metadata(const std::string &text)
{
  std::map<std::string, std::string> metadata;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const auto equals = line.find('=');
    if (equals != std::string::npos) metadata[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return metadata;
}

inline std::vector<std::string> split_words(const std::string &text)
{
  std::istringstream stream(text);
  std::vector<std::string> words;
  for (std::string word; stream >> word;) words.push_back(word);
  return words;
}

// A TorchScript exception's what() is a long interpreter traceback that ends in a line such as
// "builtins.ValueError: positions contain NaN ...": keep that line, which is what a user can act on.
inline std::string readable_error(const std::exception &exception)
{
  std::istringstream lines(exception.what());
  std::string line, last_error_line, first_line;
  while (std::getline(lines, line)) {
    if (first_line.empty() && !line.empty()) first_line = line;
    const auto colon = line.find("Error: ");
    if (colon != std::string::npos && line.find(' ') > colon) last_error_line = line;
  }
  std::string message = last_error_line.empty() ? first_line : last_error_line;
  if (message.rfind("builtins.", 0) == 0) message = message.substr(std::strlen("builtins."));
  return message;
}

// "H-O" for atomic numbers 1 and 8 (in either order): the key of shortest_distance.
inline std::string pair_name(int64_t z1, int64_t z2)
{
  if (z1 > z2) std::swap(z1, z2);
  return std::string(ELEMENTS[z1].symbol) + "-" + ELEMENTS[z2].symbol;
}

// What a client needs from mdplugin.txt, checked against the contract.
struct Metadata {
  std::string text;                             // mdplugin.txt verbatim
  std::map<std::string, std::string> entries;   // its key=value lines
  std::vector<std::string> elements;            // symbols, in the model's order
  std::vector<int64_t> atomic_numbers;          // the same elements
  std::string dtype;                            // float32 | float64
  bool local = false;                           // model_kind=local: attention within a cutoff
  double interaction_range = 0.0;               // Å; 0 for global attention ("none")
  double receptive_field = 0.0;                 // Å; how far an atom's energy reaches (local)
  bool exchange = false;                        // local, version 3: per-block methods (ghost exchange)
  // the shortest distance of each element pair in the training data (Å), keyed by the two atomic
  // numbers in ascending order; empty when the export predates the key
  std::map<std::pair<int64_t, int64_t>, double> shortest_distance;
  // the total charges and spin multiplicities of the training data; empty when the export predates them
  std::vector<int64_t> charges, multiplicities;
};

inline std::vector<int64_t> parse_integers(const std::string &path, const std::string &key,
                                           const std::string &text)
{
  std::vector<int64_t> values;
  for (const auto &word : split_words(text)) {
    char *end = nullptr;
    const long long value = std::strtoll(word.c_str(), &end, 10);
    if (word.empty() || *end != '\0')
      throw ExportError("the metadata of '" + path + "' has " + key + "=" + text +
                        ", not a list of integers; re-export the checkpoint with `mdplugin export`");
    values.push_back(value);
  }
  return values;
}

inline double parse_distance(const std::string &path, const std::string &key,
                             const std::string &text)
{
  char *end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(value) || value <= 0.0)
    throw ExportError("the metadata of '" + path + "' has " + key + "=" + text +
                      ", not a positive length in Å; re-export the checkpoint with `mdplugin export`");
  return value;
}

// Reads and checks mdplugin.txt. Refuses what SPEC.md says a loader must refuse, and an element
// symbol that does not match its atomic number (an edited or corrupted file would otherwise map H
// to carbon without a word).
inline Metadata read_metadata(const std::string &path, const std::string &text)
{
  Metadata metadata;
  metadata.text = text;
  metadata.entries = parse_metadata(text);
  auto &entries = metadata.entries;
  if (entries.empty())
    throw ExportError("'" + path + "' is a TorchScript file without mdplugin metadata (no " +
                      METADATA_FILE + "); it is not an mdplugin export. Export the checkpoint "
                      "with `mdplugin export`");
  if (entries["format"] != FORMAT_NAME)
    throw ExportError("'" + path + "' has format '" + entries["format"] + "', not '" + FORMAT_NAME +
                      "'; export the checkpoint with `mdplugin export`");
  const std::string version = entries["format_version"];
  if (version != "1" && version != "2" && version != "3")
    throw ExportError("'" + path + "' has export format version " + version +
                      "; this program reads versions " + SUPPORTED_FORMAT_VERSIONS +
                      ". Re-export the checkpoint with a matching mdplugin, or rebuild the plugin "
                      "and checker (mdplugin lammps build --force)");

  metadata.elements = split_words(entries["elements"]);
  const auto numbers = split_words(entries["atomic_numbers"]);
  if (metadata.elements.empty() || metadata.elements.size() != numbers.size())
    throw ExportError("the metadata of '" + path + "' lists no elements, or elements and atomic "
                      "numbers of different lengths; re-export the checkpoint with `mdplugin export`");
  for (size_t i = 0; i < numbers.size(); i++) {
    const std::string &symbol = metadata.elements[i];
    const int64_t expected = atomic_number_of(symbol);
    char *end = nullptr;
    const long long number = std::strtoll(numbers[i].c_str(), &end, 10);
    if (expected == 0)
      throw ExportError("the metadata of '" + path + "' lists '" + symbol +
                        "', which is not an element symbol; re-export the checkpoint with "
                        "`mdplugin export`");
    if (*end != '\0' || number != expected)
      throw ExportError("the metadata of '" + path + "' pairs element " + symbol +
                        " with atomic number " + numbers[i] + ", but " + symbol + " is " +
                        std::to_string(expected) + ": its elements and atomic_numbers disagree, so "
                        "the file was edited or damaged. Re-export the checkpoint with "
                        "`mdplugin export` rather than trusting either list");
    metadata.atomic_numbers.push_back(number);
  }

  metadata.dtype = entries["dtype"];
  if (metadata.dtype != "float32" && metadata.dtype != "float64")
    throw ExportError("the metadata of '" + path + "' has dtype '" + metadata.dtype +
                      "', not float32 or float64; re-export the checkpoint with `mdplugin export`");

  const std::string kind = entries.count("model_kind") ? entries["model_kind"] : "global";
  if (kind != "global" && kind != "local")
    throw ExportError("the metadata of '" + path + "' has model_kind '" + kind +
                      "', not local or global; re-export the checkpoint with `mdplugin export`");
  metadata.local = kind == "local";
  metadata.exchange = metadata.local && version == "3";
  if (metadata.local && version == "1")
    throw ExportError("the metadata of '" + path + "' says model_kind=local in format version 1 "
                      "(local models are version 2 or 3); re-export the checkpoint with `mdplugin export`");
  if (metadata.local) {
    metadata.interaction_range =
        parse_distance(path, "interaction_range", entries["interaction_range"]);
    metadata.receptive_field = parse_distance(path, "receptive_field", entries["receptive_field"]);
    if (metadata.receptive_field < metadata.interaction_range)
      throw ExportError("the metadata of '" + path + "' has a receptive_field shorter than its "
                        "interaction_range; re-export the checkpoint with `mdplugin export`");
  }

  for (const auto &word : split_words(entries["shortest_distance"])) {
    const auto colon = word.find(':'), dash = word.find('-');
    const int64_t z1 = dash < colon ? atomic_number_of(word.substr(0, dash)) : 0;
    const int64_t z2 = dash < colon ? atomic_number_of(word.substr(dash + 1, colon - dash - 1)) : 0;
    if (colon == std::string::npos || z1 == 0 || z2 == 0)
      throw ExportError("the metadata of '" + path + "' has a shortest_distance entry '" + word +
                        "' that is not of the form H-O:0.95; re-export the checkpoint with "
                        "`mdplugin export`");
    metadata.shortest_distance[std::minmax(z1, z2)] =
        parse_distance(path, "shortest_distance " + word.substr(0, colon), word.substr(colon + 1));
  }
  metadata.charges = parse_integers(path, "charges", entries["charges"]);
  metadata.multiplicities = parse_integers(path, "multiplicities", entries["multiplicities"]);
  return metadata;
}

// The text record against the module it describes. mdplugin.txt is written from the same model as the
// module, so they can only disagree in a damaged or hand-edited file; the module is what computes, so
// its own record wins and the file is refused. Checked: the elements (every export keeps them), the
// kind (a local module has forward_neighbors) and, where the module keeps them (exports since the
// attributes were added), interaction_range and receptive_field: a wrong range here would build the
// pair list and the ghost shell for another model than the one that runs. The Python loader checks
// mdplugin.txt against mdplugin.json, field by field (contract.py).
inline void check_module_record(const std::string &path, const torch::jit::Module &module,
                                const Metadata &metadata)
{
  const std::string refuse = "; the file is damaged or was edited by hand: re-export the checkpoint "
                             "with `mdplugin export`";
  if (module.hasattr("elements")) {
    const auto elements = module.attr("elements").toIntVector();
    if (elements != metadata.atomic_numbers) {
      std::string listed;
      for (const auto z : elements) listed += (listed.empty() ? "" : " ") + std::to_string(z);
      throw ExportError("'" + path + "': its " + METADATA_FILE + " says atomic_numbers=" +
                        metadata.entries.at("atomic_numbers") + ", but the model computes with " +
                        listed + refuse);
    }
  }
  // (the other way round, model_kind=local without forward_neighbors, load_export refuses itself)
  if (!metadata.local && module.find_method("forward_neighbors"))
    throw ExportError("'" + path + "': its " + METADATA_FILE + " says model_kind=global, but the "
                      "model is local (it has forward_neighbors and attends within a cutoff)" + refuse);
  for (const char *key : {"interaction_range", "receptive_field"}) {
    if (!metadata.local || !module.hasattr(key)) continue;
    const double own = module.attr(key).toDouble();
    const double said = std::string(key) == "interaction_range" ? metadata.interaction_range
                                                                : metadata.receptive_field;
    if (std::abs(own - said) > 1e-9 * std::abs(own))
      throw ExportError("'" + path + "': its " + METADATA_FILE + " says " + key + "=" +
                        metadata.entries.at(key) + " Å, but the model's own is " +
                        std::to_string(own) + " Å" + refuse);
  }
}

// Loads the TorchScript module and its mdplugin.txt. The archive's pickles are read by libtorch's
// restricted unpickler, which executes no code: a pickle that names anything but TorchScript types
// fails to load, and one that holds some other object than a module makes libtorch fail an
// internal assert. Both, like any other failure, become an ExportError naming the file.
inline std::pair<torch::jit::Module, Metadata> load_export(const std::string &path,
                                                           const torch::Device &device,
                                                           bool local_method_needed = true)
{
  if (!std::ifstream(path).good())
    throw ExportError("cannot open model file '" + path + "'");
  torch::jit::ExtraFilesMap extra_files{{METADATA_FILE, ""}};
  torch::jit::Module module;
  std::string failure;
  bool failed = false;
  try {
    module = torch::jit::load(path, device, extra_files);
    if (!module.find_method("forward")) {
      failed = true;
      failure = "it has no forward method";
    }
    module.eval();
  } catch (const std::exception &exception) {
    failed = true;
    failure = readable_error(exception);
    if (failure.find("INTERNAL ASSERT") != std::string::npos)
      failure = "its pickled contents are not a TorchScript module";
    if (failure.find("torch.classes.vesin") != std::string::npos)
      throw ExportError("'" + path + "' is a local export whose forward() calls vesin-torch's "
                        "neighbour list, and this program was built without vesin-torch: "
                        "pip install vesin-torch (the build for this torch) and rebuild it "
                        "(mdplugin lammps build --force)");
  }
  if (failed && path.size() > 4 && path.compare(path.size() - 4, 4, ".pt2") == 0)
    throw ExportError("'" + path + "' is a compiled export (`mdplugin export --compile`, export format "
                      "version 4), which runs in Python and OpenMM only; give this program the TorchScript "
                      "export of the same checkpoint (`mdplugin export` without --compile)");
  if (failed)
    throw ExportError("'" + path + "' is not a valid TorchScript export" +
                      (failure.empty() ? std::string() : " (" + failure + ")") +
                      "; the file is damaged or was not written by `mdplugin export`: export the "
                      "checkpoint again with `mdplugin export`");
  Metadata metadata = read_metadata(path, extra_files[METADATA_FILE]);
  if (metadata.local && local_method_needed && !module.find_method("forward_neighbors"))
    throw ExportError("'" + path + "' says model_kind=local but has no forward_neighbors method; "
                      "re-export the checkpoint with `mdplugin export`");
  if (metadata.exchange)
    for (const char *name : {"exchange_tokens", "exchange_geometry", "exchange_keys", "exchange_block", "exchange_energies"})
      if (!module.find_method(name) || !module.hasattr("width") || !module.hasattr("depth"))
        throw ExportError("'" + path + "' says format version 3 but lacks the per-block method " +
                          name + " (or its width and depth); re-export the checkpoint with `mdplugin export`");
  check_module_record(path, module, metadata);
  return {std::move(module), std::move(metadata)};
}

}    // namespace mdplugin_export

#endif
