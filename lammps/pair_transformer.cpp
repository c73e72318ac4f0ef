/* ----------------------------------------------------------------------
   pair_style transformer: a graph-free Transformer interatomic potential (mdplugin export)
   evaluated through libtorch. See lammps/README.md.

   compute() has four steps: gather the whole system on every rank, run the model, scatter the
   forces of locally owned atoms, tally their energies and virials. Sums over ranks equal one rank.
------------------------------------------------------------------------- */

#include "pair_transformer.h"
#include "mdplugin_export.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "update.h"
#include "utils.h"

#include <torch/cuda.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

using namespace LAMMPS_NS;
using namespace mdplugin_export;

namespace {

// The model ignores the neighbor list, but LAMMPS needs a cutoff to size ghost communication;
// a small one keeps that cost negligible.
constexpr double NOMINAL_CUTOFF = 1.0;    // Å

// Whitespace-separated integers; empty if any word is not one (reported by the caller).
std::vector<int64_t> parse_integers(const std::string &text)
{
  std::vector<int64_t> numbers;
  for (const auto &word : split_words(text)) {
    char *end = nullptr;
    numbers.push_back(std::strtoll(word.c_str(), &end, 10));
    if (*end != '\0') return {};
  }
  return numbers;
}

std::string join(const std::vector<std::string> &words)
{
  std::string joined;
  for (const auto &word : words) joined += (joined.empty() ? "" : " ") + word;
  return joined;
}

// One GPU per rank on multi-GPU nodes: ranks sharing a node take devices round-robin.
int node_local_rank(MPI_Comm world)
{
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int rank = 0;
  MPI_Comm_rank(node, &rank);
  MPI_Comm_free(&node);
  return rank;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairTransformer::PairTransformer(LAMMPS *lmp) :
    Pair(lmp), model_loaded(false), device(torch::kCPU), charge(0), multiplicity(1),
    cutoff(NOMINAL_CUTOFF)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the virial is tallied explicitly from r (x) f; there are no ghost-atom forces to sum
  no_virial_fdotr_compute = 1;
}

PairTransformer::~PairTransformer()
{
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

/* ----------------------------------------------------------------------
   the four steps
------------------------------------------------------------------------- */

void PairTransformer::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const System system = gather_system();
  if (system.tags.empty()) return;    // no atom of a type this style handles
  const Result result = evaluate(system);
  scatter_forces(system, result);
  tally_energy_and_virial(system, result);
}

/* ----------------------------------------------------------------------
   Global attention needs every atom: collect all ranks' atoms of mapped types and order them by
   atom ID, so the model sees the same input whatever the domain decomposition.
------------------------------------------------------------------------- */

PairTransformer::System PairTransformer::gather_system()
{
  const int nlocal = atom->nlocal;
  std::vector<tagint> local_tags;
  std::vector<int64_t> local_numbers;
  std::vector<double> local_positions;
  for (int i = 0; i < nlocal; i++) {
    if (!is_mapped(atom->type[i])) continue;
    local_tags.push_back(atom->tag[i]);
    local_numbers.push_back(type_to_atomic_number[atom->type[i]]);
    local_positions.insert(local_positions.end(), atom->x[i], atom->x[i] + 3);
  }

  const int nprocs = comm->nprocs;
  std::vector<int> counts(nprocs), offsets(nprocs);
  const int local_count = static_cast<int>(local_tags.size());
  MPI_Allgather(&local_count, 1, MPI_INT, counts.data(), 1, MPI_INT, world);
  std::exclusive_scan(counts.begin(), counts.end(), offsets.begin(), 0);
  const int total = offsets.back() + counts.back();

  std::vector<tagint> tags(total);
  std::vector<int64_t> numbers(total);
  MPI_Allgatherv(local_tags.data(), local_count, MPI_LMP_TAGINT, tags.data(), counts.data(),
                 offsets.data(), MPI_LMP_TAGINT, world);
  MPI_Allgatherv(local_numbers.data(), local_count, MPI_INT64_T, numbers.data(), counts.data(),
                 offsets.data(), MPI_INT64_T, world);
  for (int p = 0; p < nprocs; p++) {
    counts[p] *= 3;
    offsets[p] *= 3;
  }
  std::vector<double> positions(3 * static_cast<size_t>(total));
  MPI_Allgatherv(local_positions.data(), 3 * local_count, MPI_DOUBLE, positions.data(),
                 counts.data(), offsets.data(), MPI_DOUBLE, world);

  std::vector<int> order(total);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return tags[a] < tags[b]; });

  System system;
  system.centroid[0] = system.centroid[1] = system.centroid[2] = 0.0;
  for (int index : order) {
    system.tags.push_back(tags[index]);
    system.atomic_numbers.push_back(numbers[index]);
    for (int k = 0; k < 3; k++) {
      system.positions.push_back(positions[3 * index + k]);
      system.centroid[k] += positions[3 * index + k] / total;
    }
  }
  for (int i = 0; i < nlocal; i++) {
    if (!is_mapped(atom->type[i])) continue;
    const auto found = std::lower_bound(system.tags.begin(), system.tags.end(), atom->tag[i]);
    system.owned.emplace_back(i, static_cast<int>(found - system.tags.begin()));
  }
  return system;
}

PairTransformer::Result PairTransformer::evaluate(const System &system)
{
  const int64_t n = static_cast<int64_t>(system.tags.size());
  const auto dtype = (dtype_name.empty() ? model_dtype : dtype_name) == "float32" ? torch::kFloat32
                                                                                  : torch::kFloat64;
  torch::Tensor forces, per_atom_energy;    // the total energy is the sum of per-atom energies
  std::string failure;
  try {
    // from_blob only views the vectors: copy before handing them to the model
    auto positions = torch::from_blob(const_cast<double *>(system.positions.data()), {n, 3},
                                      torch::kFloat64)
                         .to(device, dtype, false, true);
    auto numbers = torch::from_blob(const_cast<int64_t *>(system.atomic_numbers.data()), {n},
                                    torch::kInt64)
                       .to(device, torch::kInt64, false, true);
    std::vector<torch::jit::IValue> inputs{positions, numbers, static_cast<int64_t>(charge),
                                           static_cast<int64_t>(multiplicity)};
    const auto outputs = model.forward(inputs).toTuple();
    forces = outputs->elements().at(1).toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    per_atom_energy =
        outputs->elements().at(2).toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
  } catch (const std::exception &exception) {
    failure = readable_error(exception);
  }
  // error->one throws a LAMMPS exception itself: call it outside the try block
  if (!failure.empty())
    error->one(FLERR, "pair_style transformer: the model failed on step " +
                   std::to_string(update->ntimestep) + ": " + failure);
  if (forces.numel() != 3 * n || per_atom_energy.numel() != n)
    error->one(FLERR,
               "pair_style transformer: the model returned forces or per-atom energies of the "
               "wrong size; the file does not follow the mdplugin export contract");
  if (!torch::isfinite(forces).all().item<bool>() ||
      !torch::isfinite(per_atom_energy).all().item<bool>())
    error->one(FLERR,
               "pair_style transformer: the model returned NaN or infinite forces on step " +
                   std::to_string(update->ntimestep) +
                   "; atoms may have left the region the model was trained on "
                   "(try a smaller timestep, or check the pair_coeff type mapping)");

  Result result;
  result.forces.assign(forces.data_ptr<double>(), forces.data_ptr<double>() + 3 * n);
  result.per_atom_energy.assign(per_atom_energy.data_ptr<double>(),
                                per_atom_energy.data_ptr<double>() + n);
  return result;
}

void PairTransformer::scatter_forces(const System &system, const Result &result)
{
  double **f = atom->f;
  for (const auto &[local, index] : system.owned)
    for (int k = 0; k < 3; k++) f[local][k] += result.forces[3 * index + k];
}

/* ----------------------------------------------------------------------
   Each rank tallies its own atoms, so sums over ranks are the totals.
   Virial W_ab = sum_i f_a,i r_b,i with r measured from the centroid: it is the strain derivative
   -dE/de_ab for x_a -> x_a + e_ab x_b (the convention of fix numdiff/virial and of LAMMPS's
   upper-triangular box tilts) and, because the model's forces sum to zero, it does not depend on the
   origin. The per-atom virial (r_i - centroid) (x) f_i is the centroid virial of this one
   many-body term, so compute centroid/stress/atom and compute stress/atom agree.
   Order: xx, yy, zz, xy, xz, yz.
------------------------------------------------------------------------- */

void PairTransformer::tally_energy_and_virial(const System &system, const Result &result)
{
  for (const auto &[local, index] : system.owned) {
    if (eflag_global) eng_vdwl += result.per_atom_energy[index];
    if (eflag_atom) eatom[local] += result.per_atom_energy[index];
    if (!vflag_either) continue;
    const double *force = &result.forces[3 * index];
    double r[3];
    for (int k = 0; k < 3; k++) r[k] = system.positions[3 * index + k] - system.centroid[k];
    const double v[6] = {force[0] * r[0], force[1] * r[1], force[2] * r[2],
                         force[0] * r[1], force[0] * r[2], force[1] * r[2]};
    for (int k = 0; k < 6; k++) {
      if (vflag_global) virial[k] += v[k];
      if (vflag_atom) vatom[local][k] += v[k];
    }
  }
}

/* ----------------------------------------------------------------------
   pair_style transformer [device cpu|cuda] [dtype float32|float64] [charge Q] [spin M]
------------------------------------------------------------------------- */

void PairTransformer::settings(int narg, char **arg)
{
  check_box_and_units();
  for (int iarg = 0; iarg < narg; iarg += 2) {
    const std::string keyword = arg[iarg];
    if (iarg + 1 >= narg)
      error->all(FLERR, "pair_style transformer: keyword '" + keyword + "' needs a value");
    const std::string value = arg[iarg + 1];
    if (keyword == "device") {
      if (value == "cpu") {
        device = torch::Device(torch::kCPU);
      } else if (value == "cuda") {
        if (!torch::cuda::is_available())
          error->all(FLERR,
                     "pair_style transformer: device cuda asked for, but libtorch sees no CUDA "
                     "device on this node; use device cpu");
        const int gpus = static_cast<int>(torch::cuda::device_count());
        device = torch::Device(torch::kCUDA, node_local_rank(world) % gpus);
      } else {
        error->all(FLERR, "pair_style transformer: device must be cpu or cuda, not '" + value + "'");
      }
    } else if (keyword == "dtype") {
      if (value != "float32" && value != "float64")
        error->all(FLERR,
                   "pair_style transformer: dtype must be float32 or float64, not '" + value + "'");
      dtype_name = value;
    } else if (keyword == "charge") {
      charge = utils::inumeric(FLERR, value, false, lmp);
    } else if (keyword == "spin" || keyword == "multiplicity") {
      multiplicity = utils::inumeric(FLERR, value, false, lmp);
      if (multiplicity < 1)
        error->all(FLERR,
                   "pair_style transformer: spin is the spin multiplicity 2S+1 (1 = singlet), "
                   "so it must be at least 1, not " + value);
    } else {
      error->all(FLERR,
                 "pair_style transformer: unknown keyword '" + keyword +
                     "'; the keywords are device, dtype, charge and spin");
    }
  }
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt El1 El2 ...   (one element symbol, or NULL, per atom type)
------------------------------------------------------------------------- */

void PairTransformer::coeff(int narg, char **arg)
{
  if (narg < 3)
    error->all(FLERR,
               "pair_coeff for pair_style transformer is: pair_coeff * * model.pt El1 El2 ... "
               "(one element symbol per atom type)");
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR,
               "pair_coeff for pair_style transformer must start with * * (one call maps all "
               "types): pair_coeff * * model.pt El1 El2 ...");
  if (!allocated) allocate();
  load_model(arg[2]);
  map_types_to_elements(narg - 3, arg + 3);
}

void PairTransformer::init_style()
{
  check_box_and_units();
  if (atom->tag_enable == 0)
    error->all(FLERR,
               "pair_style transformer needs atom IDs to order atoms across ranks; remove "
               "'atom_modify id no'");
  if (3 * atom->natoms > MAXSMALLINT)
    error->all(FLERR, "pair_style transformer: too many atoms for one global-attention evaluation");
  // no neighbor list request: the model reads every atom's coordinates itself (global attention)
}

double PairTransformer::init_one(int, int)
{
  return cutoff;
}

/* ---------------------------------------------------------------------- */

void PairTransformer::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  for (int i = 0; i <= n; i++)
    for (int j = 0; j <= n; j++) setflag[i][j] = 0;
  type_to_atomic_number.assign(n + 1, 0);
}

void PairTransformer::load_model(const std::string &path)
{
  if (!std::ifstream(path).good())
    error->all(FLERR,
               "pair_style transformer: cannot open model file '" + path +
                   "'; check the path in pair_coeff (relative paths start in the directory "
                   "LAMMPS runs in)");
  torch::jit::ExtraFilesMap extra_files{{METADATA_FILE, ""}};
  std::string failure;
  try {
    model = torch::jit::load(path, device, extra_files);
    model.eval();
  } catch (const std::exception &exception) {
    failure = exception.what();
    failure = failure.substr(0, failure.find('\n'));
  }
  if (!failure.empty())
    error->all(FLERR,
               "pair_style transformer: '" + path +
                   "' is not a TorchScript file libtorch can load (" + failure +
                   "); make one with `mdplugin export`");

  auto metadata = parse_metadata(extra_files[METADATA_FILE]);
  if (metadata.empty())
    error->all(FLERR,
               "pair_style transformer: '" + path +
                   "' is a TorchScript file without mdplugin metadata (no mdplugin.txt); it is "
                   "not an mdplugin export. Export the checkpoint with `mdplugin export`");
  if (metadata["format"] != FORMAT_NAME)
    error->all(FLERR,
               "pair_style transformer: '" + path + "' has format '" + metadata["format"] +
                   "', not '" + FORMAT_NAME + "'; export the checkpoint with `mdplugin export`");
  if (metadata["format_version"] != SUPPORTED_FORMAT_VERSION)
    error->all(FLERR,
               "pair_style transformer: '" + path + "' has export format version " +
                   metadata["format_version"] + "; this pair style reads version " +
                   SUPPORTED_FORMAT_VERSION +
                   ". Re-export the checkpoint with the mdplugin that built this plugin, or "
                   "rebuild the plugin (mdplugin lammps build --force)");

  model_elements = split_words(metadata["elements"]);
  model_atomic_numbers = parse_integers(metadata["atomic_numbers"]);
  if (model_elements.empty() || model_elements.size() != model_atomic_numbers.size())
    error->all(FLERR,
               "pair_style transformer: the metadata of '" + path +
                   "' lists no elements, or elements and atomic numbers that do not match; "
                   "re-export the checkpoint");
  model_dtype = metadata["dtype"];
  interaction_range = metadata["interaction_range"];
  model_path = path;
  model_loaded = true;
  check_box_and_units();
}

// The type -> element mapping is the most common cause of "bizarrely unstable" runs: every name
// must be one of the model's elements, and there must be exactly one per atom type.
void PairTransformer::map_types_to_elements(int narg, char **arg)
{
  const int ntypes = atom->ntypes;
  if (narg != ntypes)
    error->all(FLERR,
               "pair_coeff * * " + model_path + " names " + std::to_string(narg) +
                   " element(s) but the box has " + std::to_string(ntypes) +
                   " atom types; give one element symbol per type, in type order (NULL for types "
                   "another style handles under pair_style hybrid/overlay)");

  int mapped = 0;
  for (int type = 1; type <= ntypes; type++) {
    const std::string name = arg[type - 1];
    if (name == "NULL") {
      if (!used_under_hybrid())
        error->all(FLERR,
                   "pair_coeff maps atom type " + std::to_string(type) +
                       " to NULL, but pair_style transformer is not a sub-style of "
                       "hybrid/overlay, so nothing would compute its forces; name its element");
      type_to_atomic_number[type] = 0;
      continue;
    }
    const auto found = std::find(model_elements.begin(), model_elements.end(), name);
    if (found == model_elements.end())
      error->all(FLERR,
                 "pair_coeff maps atom type " + std::to_string(type) + " to element '" + name +
                     "', which is not one of the model's elements (" + join(model_elements) +
                     "); fix the pair_coeff mapping or use a model trained on that element");
    type_to_atomic_number[type] = model_atomic_numbers[found - model_elements.begin()];
    mapped++;
  }
  if (mapped == 0) error->all(FLERR, "pair_coeff maps every atom type to NULL; map at least one");

  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = (is_mapped(i) && is_mapped(j)) ? 1 : 0;
}

bool PairTransformer::is_mapped(int type) const
{
  return type_to_atomic_number[type] != 0;
}

bool PairTransformer::used_under_hybrid() const
{
  return force->pair_style && utils::strmatch(force->pair_style, "^hybrid");
}

void PairTransformer::check_box_and_units()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               std::string("pair_style transformer requires 'units metal' (Å, eV, ps), not 'units ") +
                   update->unit_style + "'; the model works in Å and eV");
  const bool periodic = domain->xperiodic || domain->yperiodic || domain->zperiodic;
  if (!periodic || !model_loaded) return;
  if (interaction_range == "none")
    error->all(FLERR,
               "pair_style transformer: the model '" + model_path +
                   "' has global attention (every atom interacts with every atom, with no "
                   "cutoff) and supports non-periodic boxes only; use 'boundary f f f' or "
                   "'boundary s s s'");
  error->all(FLERR,
             "pair_style transformer supports non-periodic boxes only (the model '" + model_path +
                 "' has interaction range " + interaction_range +
                 " Å, but periodic images are not implemented); use 'boundary f f f' or "
                 "'boundary s s s'");
}
