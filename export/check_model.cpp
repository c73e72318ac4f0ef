// mdplugin_check: load an mdplugin export with libtorch alone (no Python), print its metadata,
// and, given an XYZ file, its energy, forces and per-atom energies. An extended XYZ comment line
// with Lattice="ax ay az bx by bz cx cy cz" (and optionally pbc="T T T") makes the structure
// periodic, which a local model (format 2) evaluates with that cell and a global model refuses.
//
//   mdplugin_check MODEL.pt [STRUCTURE.xyz] [--charge Q] [--multiplicity M] [--dtype float32|float64]
//
// Output, one record per line, numbers with 17 significant digits (exact for float64):
//   metadata KEY=VALUE            (the export's mdplugin.txt, verbatim)
//   natoms N
//   energy E                      (eV)
//   force I SYMBOL FX FY FZ       (eV/Å, I counts from 0 in file order)
//   per_atom_energy I SYMBOL E    (eV)
//   virial XX XY XZ YX YY YZ ZX ZY ZZ   (eV; local models only: -dE/dstrain, SPEC.md)
// Failures print "mdplugin_check: error: ..." on stderr and exit with status 1.

#include "mdplugin_export.h"

#include <torch/script.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace mdplugin_export;

namespace {

struct Options {
  std::string model_path;
  std::string structure_path;
  int64_t charge = 0;
  int64_t multiplicity = 1;
  std::string dtype;    // empty: the model's own dtype
};

struct Export {
  torch::jit::Module module;
  Metadata metadata;    // mdplugin.txt, checked (mdplugin_export.h)
  std::map<std::string, int64_t> atomic_number_of_symbol;
};

struct Structure {
  std::vector<std::string> symbols;
  std::vector<double> positions;    // [n*3] Å
  std::vector<double> cell;         // [9] Å, rows are lattice vectors; empty: no cell
  bool pbc[3] = {false, false, false};
};

// The value of key="..." in an extended XYZ comment line, or "" when absent.
std::string quoted_value(const std::string &comment, const std::string &key)
{
  const auto start = comment.find(key + "=\"");
  if (start == std::string::npos) return "";
  const auto open = start + key.size() + 2;
  const auto close = comment.find('"', open);
  return close == std::string::npos ? "" : comment.substr(open, close - open);
}

[[noreturn]] void fail(const std::string &message)
{
  throw std::runtime_error(message);
}

int64_t parse_integer(const std::string &option, const std::string &text)
{
  char *end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0') fail(option + " needs an integer, not '" + text + "'");
  return value;
}

Options parse_arguments(int argc, char **argv)
{
  Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; i++) {
    const std::string argument = argv[i];
    const bool has_value = i + 1 < argc;
    if (argument == "-h" || argument == "--help") {
      std::printf("usage: mdplugin_check MODEL.pt [STRUCTURE.xyz] [--charge Q] "
                  "[--multiplicity M] [--dtype float32|float64]\n");
      std::exit(0);
    } else if (argument == "--charge" && has_value) {
      options.charge = parse_integer(argument, argv[++i]);
    } else if (argument == "--multiplicity" && has_value) {
      options.multiplicity = parse_integer(argument, argv[++i]);
    } else if (argument == "--dtype" && has_value) {
      options.dtype = argv[++i];
      if (options.dtype != "float32" && options.dtype != "float64")
        fail("--dtype must be float32 or float64, not '" + options.dtype + "'");
    } else if (argument.rfind("--", 0) == 0) {
      fail("unknown option or missing value: " + argument + " (see --help)");
    } else {
      positional.push_back(argument);
    }
  }
  if (positional.empty() || positional.size() > 2)
    fail("usage: mdplugin_check MODEL.pt [STRUCTURE.xyz] [--charge Q] [--multiplicity M] "
         "[--dtype float32|float64]");
  options.model_path = positional[0];
  if (positional.size() == 2) options.structure_path = positional[1];
  return options;
}

Export load_export(const std::string &path)
{
  Export model;
  try {
    auto [module, metadata] = mdplugin_export::load_export(path, torch::kCPU);
    model.module = std::move(module);
    model.metadata = std::move(metadata);
  } catch (const ExportError &error) {
    fail(error.what());
  }
  for (size_t i = 0; i < model.metadata.elements.size(); i++)
    model.atomic_number_of_symbol[model.metadata.elements[i]] = model.metadata.atomic_numbers[i];
  return model;
}

// Plain XYZ: a count line, a comment line, then "symbol x y z" lines (extra columns ignored).
Structure read_xyz(const std::string &path)
{
  std::ifstream file(path);
  if (!file) fail("cannot open structure file '" + path + "'");
  std::string line;
  long count = -1;
  if (std::getline(file, line)) count = std::strtol(line.c_str(), nullptr, 10);
  if (count <= 0) fail("'" + path + "' does not start with a positive atom count (XYZ format)");
  Structure structure;
  std::string comment;
  std::getline(file, comment);
  if (const auto lattice = quoted_value(comment, "Lattice"); !lattice.empty()) {
    std::istringstream numbers(lattice);
    for (double value; numbers >> value;) structure.cell.push_back(value);
    if (structure.cell.size() != 9)
      fail("'" + path + "': Lattice=\"" + lattice + "\" is not nine numbers (three lattice vectors)");
    const auto pbc = split_words(quoted_value(comment, "pbc"));
    for (int k = 0; k < 3; k++)    // extended XYZ: a Lattice without pbc is periodic
      structure.pbc[k] = pbc.size() == 3 ? (pbc[k] == "T" || pbc[k] == "True") : true;
  }
  for (long i = 0; i < count; i++) {
    std::string symbol;
    double x, y, z;
    if (!std::getline(file, line) || !(std::istringstream(line) >> symbol >> x >> y >> z))
      fail("'" + path + "': atom line " + std::to_string(i + 1) + " is not 'symbol x y z'");
    structure.symbols.push_back(symbol);
    structure.positions.insert(structure.positions.end(), {x, y, z});
  }
  return structure;
}

std::vector<int64_t> atomic_numbers(const Export &model, const Structure &structure)
{
  std::vector<int64_t> numbers;
  for (const auto &symbol : structure.symbols) {
    const auto found = model.atomic_number_of_symbol.find(symbol);
    if (found == model.atomic_number_of_symbol.end())
      fail("element '" + symbol + "' is not one of the model's elements (" +
           model.metadata.entries.at("elements") + ")");
    numbers.push_back(found->second);
  }
  return numbers;
}

void evaluate_and_print(Export &model, const Structure &structure, const Options &options)
{
  const int64_t n = static_cast<int64_t>(structure.symbols.size());
  const std::string dtype_name = options.dtype.empty() ? model.metadata.dtype : options.dtype;
  const auto dtype = dtype_name == "float32" ? torch::kFloat32 : torch::kFloat64;
  auto numbers = atomic_numbers(model, structure);
  auto positions =
      torch::from_blob(const_cast<double *>(structure.positions.data()), {n, 3}, torch::kFloat64)
          .to(dtype);
  auto number_tensor = torch::from_blob(numbers.data(), {n}, torch::kInt64).clone();

  if (!model.metadata.local && (structure.pbc[0] || structure.pbc[1] || structure.pbc[2]))
    fail("'" + options.structure_path + "' is periodic (Lattice=, pbc), but the model has global "
         "attention (interaction_range=none) and supports isolated structures only; remove the "
         "Lattice from the comment line, or use a local model");
  torch::Tensor energy, forces, per_atom_energy, virial;
  try {
    std::vector<torch::jit::IValue> inputs{positions, number_tensor, options.charge,
                                           options.multiplicity};
    if (model.metadata.local) {    // no Lattice: an isolated structure (zero cell, no pbc)
      auto cell = torch::zeros({3, 3}, torch::kFloat64);
      if (!structure.cell.empty())
        cell = torch::from_blob(const_cast<double *>(structure.cell.data()), {3, 3}, torch::kFloat64)
                   .clone();
      auto pbc = torch::tensor({structure.pbc[0], structure.pbc[1], structure.pbc[2]}, torch::kBool);
      inputs.emplace_back(cell.to(dtype));
      inputs.emplace_back(pbc);
    }
    const auto outputs = model.module.forward(inputs).toTuple();
    energy = outputs->elements().at(0).toTensor().to(torch::kFloat64);
    forces = outputs->elements().at(1).toTensor().to(torch::kFloat64).contiguous();
    per_atom_energy = outputs->elements().at(2).toTensor().to(torch::kFloat64).contiguous();
    if (model.metadata.local)
      virial = outputs->elements().at(3).toTensor().to(torch::kFloat64).contiguous();
  } catch (const std::exception &exception) {
    fail("the model failed on '" + options.structure_path + "': " + readable_error(exception));
  }

  std::printf("natoms %lld\n", static_cast<long long>(n));
  std::printf("energy %.17g\n", energy.item<double>());
  const auto f = forces.accessor<double, 2>();
  for (int64_t i = 0; i < n; i++)
    std::printf("force %lld %s %.17g %.17g %.17g\n", static_cast<long long>(i),
                structure.symbols[i].c_str(), f[i][0], f[i][1], f[i][2]);
  const auto e = per_atom_energy.accessor<double, 1>();
  for (int64_t i = 0; i < n; i++)
    std::printf("per_atom_energy %lld %s %.17g\n", static_cast<long long>(i),
                structure.symbols[i].c_str(), e[i]);
  if (virial.defined()) {
    std::printf("virial");
    for (int64_t k = 0; k < 9; k++) std::printf(" %.17g", virial.data_ptr<double>()[k]);
    std::printf("\n");
  }
}

}    // namespace

int main(int argc, char **argv)
{
  try {
    const Options options = parse_arguments(argc, argv);
    Export model = load_export(options.model_path);
    std::istringstream lines(model.metadata.text);
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) std::printf("metadata %s\n", line.c_str());
    if (!options.structure_path.empty())
      evaluate_and_print(model, read_xyz(options.structure_path), options);
  } catch (const std::exception &exception) {
    std::fflush(stdout);
    std::fprintf(stderr, "mdplugin_check: error: %s\n", exception.what());
    return 1;
  }
  return 0;
}
