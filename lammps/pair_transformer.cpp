/* ----------------------------------------------------------------------
   pair_style transformer: a graph-free Transformer interatomic potential (mdplugin export)
   evaluated through libtorch. See lammps/README.md.

   The export's metadata chooses one of two paths, each four steps:
   - global attention: gather the whole system on every rank, run the model, scatter the forces of
     locally owned atoms, tally their energies and virials. Sums over ranks equal one rank.
   - local attention: collect this rank's atoms, its ghosts and the pairs closer than the
     interaction range from a full neighbor list, run the model, scatter forces onto local and
     ghost atoms (reverse communication sums the ghosts' into their owners), tally the energies
     of local atoms and the virial of every pair. With an export of version 3 the model runs block
     by block instead, ghosts out to the interaction range only, their keys and values exchanged between
     blocks (compute_exchange). On one rank in a box periodic in x, y and z, the export's periodic
     forward takes the owned atoms and the cell instead (each atom computed once, periodic images
     folded into cell shifts), except on steps that need per-atom virials.
------------------------------------------------------------------------- */

#include "pair_transformer.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <numeric>

using namespace LAMMPS_NS;
using namespace mdplugin_export;

namespace {

bool all_finite(std::initializer_list<torch::Tensor> tensors)
{
  for (const auto &tensor : tensors)
    if (!torch::isfinite(tensor).all().item<bool>()) return false;
  return true;
}

std::string not_finite_message(bigint step)
{
  return "pair_style transformer: the model returned NaN or infinite forces on step " +
      std::to_string(step) +
      "; atoms may have left the region the model was trained on "
      "(try a smaller timestep, or check the pair_coeff type mapping)";
}

// The global model ignores the neighbor list, but LAMMPS needs a cutoff to size ghost
// communication; a small one keeps that cost negligible.
constexpr double NOMINAL_CUTOFF = 1.0;    // Å
// One evaluation lists every pair within the interaction range among local and ghost atoms. Beyond this
// many (about 12 GB: the water model took 22 GB for ~35 million), with a ghost shell that outnumbers the
// rank's own atoms tenfold, the run is refused in init_style with the numbers: the shell, not the
// system, would fill the memory (a 10 Å model in a 12 Å water box).
constexpr double MAX_PAIRS = 2.0e7;
constexpr double BYTES_PER_PAIR = 630.0;    // measured on the water model (width 64, 4 blocks)

// Room for every atomic number in the element-pair tables.
constexpr int ELEMENT_SLOTS = MAX_ATOMIC_NUMBER + 1;

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

// OMP_NUM_THREADS when it is a positive integer, else 1: libtorch's own default (every core of
// the node) oversubscribes a node that runs one rank per core.
int default_threads()
{
  const char *text = std::getenv("OMP_NUM_THREADS");
  if (!text) return 1;
  char *end = nullptr;
  const long value = std::strtol(text, &end, 10);
  return (*end == '\0' && value > 0) ? static_cast<int>(value) : 1;
}

// A tensor the model returned, as float64 on the CPU with the expected number of elements.
torch::Tensor host_double(const torch::Tensor &tensor)
{
  return tensor.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairTransformer::PairTransformer(LAMMPS *lmp) :
    Pair(lmp), model_loaded(false), device(torch::kCPU), charge(0), multiplicity(1), threads(1),
    domain_warn(0.0), domain_stop(0.0), below_warn(false), periodic_mode(PERIODIC_AUTO),
    periodic_forward(false), exchange_mode(EXCHANGE_AUTO), exchange_path(false), deviation_every(0), deviation_warn(0.0), deviation_stop(0.0),
    deviation_file_started(false)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the virial is tallied explicitly, from r (x) f (global) or from the pair gradients (local)
  no_virial_fdotr_compute = 1;
  // pvector (compute pair transformer): [0] the closest approach relative to the training data;
  // a committee export's [1] largest force deviation (eV/Å) and [2] energy deviation (eV/atom)
  nextra = 3;
  pvector = new double[nextra];
  pvector[0] = INFINITY;
  pvector[1] = pvector[2] = NAN;
}

PairTransformer::~PairTransformer()
{
  if (copymode) return;
  delete[] pvector;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

/* ---------------------------------------------------------------------- */

void PairTransformer::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (!metadata.local)
    compute_global();
  else if (periodic_forward && !vflag_atom && !cvflag_atom)    // no per-atom virial from forward
    compute_periodic();
  else if (exchange_path)
    compute_exchange();
  else
    compute_local();
  if (metadata.local && periodic_forward && deviation_due()) deviation_periodic();
}

/* ----------------------------------------------------------------------
   global attention
------------------------------------------------------------------------- */

void PairTransformer::compute_global()
{
  System system = gather_system();
  if (system.tags.empty()) return;    // no atom of a type this style handles (same on all ranks)
  if (domain->xperiodic || domain->yperiodic || domain->zperiodic) make_molecule_whole(system);

  if (!inverse_shortest_squared.empty()) {
    ClosestPair closest;
    const int64_t n = static_cast<int64_t>(system.tags.size());
    for (const auto &[local, i] : system.owned)
      for (int64_t j = 0; j < n; j++) {
        if (j == i) continue;
        double distance_squared = 0.0;
        for (int k = 0; k < 3; k++) {
          const double delta = system.positions[3 * j + k] - system.positions[3 * i + k];
          distance_squared += delta * delta;
        }
        consider_pair(closest, system.atomic_numbers[i], system.atomic_numbers[j],
                      distance_squared);
      }
    report_domain(closest);
  }

  const Result result = evaluate(system);
  scatter_forces(system, result);
  tally_energy_and_virial(system, result);
  if (deviation_due()) {
    // member 0's forces and energy are this step's: the other members alone are evaluated
    const int64_t n = static_cast<int64_t>(system.tags.size());
    const torch::Tensor forces =
        torch::from_blob(const_cast<double *>(result.forces.data()), {n, 3}, torch::kFloat64).clone();
    double energy = 0.0;
    for (double e : result.per_atom_energy) energy += e;
    report_deviation(global_inputs(system), forces, energy);
  }
}

// The global model's inputs for a system: positions, atomic numbers, charge, multiplicity.
std::vector<torch::jit::IValue> PairTransformer::global_inputs(const System &system)
{
  const int64_t n = static_cast<int64_t>(system.tags.size());
  // from_blob only views the vectors: copy before handing them to the model
  auto positions = torch::from_blob(const_cast<double *>(system.positions.data()), {n, 3},
                                    torch::kFloat64)
                       .to(device, input_dtype(), false, true);
  auto numbers = torch::from_blob(const_cast<int64_t *>(system.atomic_numbers.data()), {n},
                                  torch::kInt64)
                     .to(device, torch::kInt64, false, true);
  return {positions, numbers, static_cast<int64_t>(charge), static_cast<int64_t>(multiplicity)};
}

/* ----------------------------------------------------------------------
   A committee export (mdplugin export M0.pt M1.pt ...) runs member 0 in forward; its deviation
   method evaluates every member. Every deviation_every steps: pvector[1..2] for compute pair,
   a line in deviation_file, and the deviation_warn / deviation_stop thresholds.
------------------------------------------------------------------------- */

bool PairTransformer::deviation_due() const
{
  return deviation_every > 0 && update->ntimestep % deviation_every == 0;
}

void PairTransformer::report_deviation(std::vector<torch::jit::IValue> inputs,
                                       const torch::Tensor &lead_forces, double lead_energy)
{
  double largest = NAN, energy = NAN, smallest = NAN, mean = NAN;
  std::string failure;
  try {
    torch::Tensor per_atom;
    if (lead_forces.defined()) {
      // the others' forces beside member 0's: sqrt(<|F_i - <F_i>|^2>) per atom, as `deviation` computes it
      const auto outputs = model.get_method("others")(std::move(inputs)).toTuple();
      const torch::Tensor energies = torch::cat(
          {torch::tensor({lead_energy}, torch::kFloat64), host_double(outputs->elements().at(0).toTensor())});
      const torch::Tensor forces =
          torch::cat({lead_forces.unsqueeze(0), host_double(outputs->elements().at(1).toTensor())});
      per_atom = (forces - forces.mean(0, true)).pow(2).sum(-1).mean(0).sqrt();
      largest = per_atom.max().item<double>();
      energy = (energies / static_cast<double>(per_atom.numel())).std(false).item<double>();
    } else {
      const auto outputs = model.get_method("deviation")(std::move(inputs)).toTuple();
      per_atom = host_double(outputs->elements().at(1).toTensor());
      largest = host_double(outputs->elements().at(0).toTensor()).item<double>();
      energy = host_double(outputs->elements().at(2).toTensor()).item<double>();
    }
    smallest = per_atom.min().item<double>();
    mean = per_atom.mean().item<double>();
  } catch (const std::exception &exception) {
    failure = readable_error(exception);
  }
  if (!failure.empty())
    error->one(FLERR, "pair_style transformer: the committee's deviation failed on step " +
                   std::to_string(update->ntimestep) + ": " + failure);
  // every rank computed the same numbers (global model, or one rank): compute pair sums over ranks
  pvector[1] = comm->me == 0 ? largest : 0.0;
  pvector[2] = comm->me == 0 ? energy : 0.0;
  if (comm->me == 0 && !deviation_file.empty()) {
    FILE *out = fopen(deviation_file.c_str(), "a");
    if (out == nullptr)
      error->one(FLERR, "pair_style transformer: cannot append to deviation_file " + deviation_file);
    fmt::print(out, "{} {:.6e} {:.6e} {:.6e} {:.6e}\n", update->ntimestep, largest, smallest, mean,
               energy);
    fclose(out);
  }
  const std::string what = fmt::format(
      "on step {} the committee's largest force deviation is {:.4f} eV/Å", update->ntimestep, largest);
  if (deviation_stop > 0.0 && largest > deviation_stop)
    error->all(FLERR, "pair_style transformer: " + what + ", above deviation_stop " +
                   fmt::format("{}", deviation_stop) +
                   ": its members disagree, the model is outside what it learned");
  if (deviation_warn > 0.0 && largest > deviation_warn && comm->me == 0)
    error->warning(FLERR, "pair_style transformer: " + what + ", above deviation_warn " +
                   fmt::format("{}", deviation_warn) + ": the model is extrapolating");
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

/* ----------------------------------------------------------------------
   ML/MM in a periodic box (pair_style hybrid/overlay: the model's types are one molecule, another
   style computes the solvent). The model sees no periodic images, so the molecule is rebuilt whole
   around its first atom with the minimum image. That is exact while it spans less than half the
   box; beyond, some bond would come out about a box length long, so a molecule that spans more
   than half the shortest box width is refused. Every rank holds the same system: error->all.
------------------------------------------------------------------------- */

void PairTransformer::make_molecule_whole(System &system)
{
  const size_t n = system.tags.size();
  for (size_t i = 1; i < n; i++) {
    double delta[3];
    for (int k = 0; k < 3; k++) delta[k] = system.positions[3 * i + k] - system.positions[k];
    domain->minimum_image_big(FLERR, delta);
    for (int k = 0; k < 3; k++) system.positions[3 * i + k] = system.positions[k] + delta[k];
  }
  for (int k = 0; k < 3; k++) {
    system.centroid[k] = 0.0;
    for (size_t i = 0; i < n; i++) system.centroid[k] += system.positions[3 * i + k] / n;
  }

  // the box's perpendicular widths: volume / area of the opposite face (a, b, c are its edges)
  const double *h = domain->h;    // xprd, yprd, zprd, yz, xz, xy
  const double a[3] = {h[0], 0.0, 0.0}, b[3] = {h[5], h[1], 0.0}, c[3] = {h[4], h[3], h[2]};
  const double *edges[3][2] = {{b, c}, {c, a}, {a, b}};
  const bool periodic[3] = {domain->xperiodic != 0, domain->yperiodic != 0, domain->zperiodic != 0};
  double width = INFINITY;
  for (int k = 0; k < 3; k++) {
    if (!periodic[k]) continue;
    const double *u = edges[k][0], *v = edges[k][1];
    const double normal[3] = {u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2],
                              u[0] * v[1] - u[1] * v[0]};
    width = std::min(width, h[0] * h[1] * h[2] / std::sqrt(normal[0] * normal[0] +
                                                            normal[1] * normal[1] +
                                                            normal[2] * normal[2]));
  }
  double longest_squared = 0.0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++) {
      double distance_squared = 0.0;
      for (int k = 0; k < 3; k++) {
        const double delta = system.positions[3 * j + k] - system.positions[3 * i + k];
        distance_squared += delta * delta;
      }
      longest_squared = std::max(longest_squared, distance_squared);
    }
  if (std::sqrt(longest_squared) > 0.5 * width)
    error->all(FLERR,
               "pair_style transformer: the atoms of the global model " + model_name() +
                   " span " + std::to_string(std::sqrt(longest_squared)) +
                   " Å, more than half the shortest periodic box width (" +
                   std::to_string(0.5 * width) +
                   " Å): it sees its atoms as one molecule made whole with the minimum image, "
                   "which needs a molecule smaller than half the box; use a larger box (more "
                   "solvent) or map the types of one small molecule only");
}

PairTransformer::Result PairTransformer::evaluate(const System &system)
{
  const int64_t n = static_cast<int64_t>(system.tags.size());
  torch::Tensor forces, per_atom_energy;    // the total energy is the sum of per-atom energies
  std::string failure;
  try {
    const auto outputs = model.forward(global_inputs(system)).toTuple();
    forces = host_double(outputs->elements().at(1).toTensor());
    per_atom_energy = host_double(outputs->elements().at(2).toTensor());
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
  if (!all_finite({forces, per_atom_energy})) error->one(FLERR, not_finite_message(update->ntimestep));

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
   local attention
------------------------------------------------------------------------- */

void PairTransformer::compute_local()
{
  const Neighborhood neighborhood = collect_neighborhood(true);
  if (neighborhood.n_local == 0) return;    // this rank owns no atom of a mapped type
  const LocalResult result = evaluate_local(neighborhood);
  scatter_local_forces(neighborhood, result);
  tally_local_energy_and_virial(neighborhood, result);
}

/* ----------------------------------------------------------------------
   The model's input on this rank: mapped local atoms first, then mapped ghosts (periodic images
   are ghosts, so no pair needs a cell shift), and every ordered pair closer than the interaction
   range from the full neighbor list. With ghosts_too (the ghost-shell path) the list holds the
   ghosts' neighbors too and every ghost is an input: ghosts reach out to receptive_field (+ skin),
   so the energy of every local atom sees every atom it depends on. Without (block by block), the
   pairs are the local atoms' and the ghosts are the ones within range of a local atom.
------------------------------------------------------------------------- */

PairTransformer::Neighborhood PairTransformer::collect_neighborhood(bool ghosts_too)
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int *type = atom->type;
  double **x = atom->x;

  Neighborhood neighborhood;
  std::vector<int> model_index(nall, -1);
  auto add = [&](int i) {
    model_index[i] = static_cast<int>(neighborhood.atom_index.size());
    neighborhood.atom_index.push_back(i);
    neighborhood.atomic_numbers.push_back(type_to_atomic_number[type[i]]);
    neighborhood.positions.insert(neighborhood.positions.end(), x[i], x[i] + 3);
  };
  for (int i = 0; i < (ghosts_too ? nall : nlocal); i++)
    if (is_mapped(type[i])) add(i);
  neighborhood.n_local = std::count_if(neighborhood.atom_index.begin(), neighborhood.atom_index.end(),
                                       [nlocal](int i) { return i < nlocal; });

  const double range_squared = metadata.interaction_range * metadata.interaction_range;
  const bool monitor = !inverse_shortest_squared.empty();
  ClosestPair closest;
  for (int ii = 0; ii < list->inum + (ghosts_too ? list->gnum : 0); ii++) {
    const int i = list->ilist[ii];
    if (model_index[i] < 0) continue;
    const int *neighbors = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = neighbors[jj] & NEIGHMASK;
      if (!is_mapped(type[j])) continue;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double distance_squared = dx * dx + dy * dy + dz * dz;
      if (distance_squared >= range_squared) continue;    // the skin's pairs: zero weight anyway
      if (model_index[j] < 0) add(j);    // a ghost in range of a local atom (block by block)
      neighborhood.centers.push_back(model_index[i]);
      neighborhood.neighbors.push_back(model_index[j]);
      if (monitor && i < nlocal)
        consider_pair(closest, type_to_atomic_number[type[i]], type_to_atomic_number[type[j]],
                      distance_squared);
    }
  }
  if (monitor) report_domain(closest);
  return neighborhood;
}

PairTransformer::LocalResult PairTransformer::evaluate_local(const Neighborhood &neighborhood)
{
  const int64_t n = static_cast<int64_t>(neighborhood.atom_index.size());
  const int64_t n_local = neighborhood.n_local;
  const int64_t edges = static_cast<int64_t>(neighborhood.centers.size());
  torch::Tensor forces, per_atom_energy, edge_gradient;
  std::string failure;
  try {
    auto positions = torch::from_blob(const_cast<double *>(neighborhood.positions.data()), {n, 3},
                                      torch::kFloat64)
                         .to(device, input_dtype(), false, true);
    auto numbers = torch::from_blob(const_cast<int64_t *>(neighborhood.atomic_numbers.data()),
                                    {n}, torch::kInt64)
                       .to(device, torch::kInt64, false, true);
    auto pairs = torch::empty({2, edges}, torch::kInt64);
    std::copy(neighborhood.centers.begin(), neighborhood.centers.end(), pairs.data_ptr<int64_t>());
    std::copy(neighborhood.neighbors.begin(), neighborhood.neighbors.end(),
              pairs.data_ptr<int64_t>() + edges);
    std::vector<torch::jit::IValue> inputs{positions,
                                           numbers,
                                           pairs.to(device),
                                           n_local,
                                           static_cast<int64_t>(charge),
                                           static_cast<int64_t>(multiplicity)};
    const auto outputs = model.get_method("forward_neighbors")(inputs).toTuple();
    forces = host_double(outputs->elements().at(1).toTensor());
    per_atom_energy = host_double(outputs->elements().at(2).toTensor());
    edge_gradient = host_double(outputs->elements().at(3).toTensor());
  } catch (const std::exception &exception) {
    failure = readable_error(exception);
  }
  if (!failure.empty())
    error->one(FLERR, "pair_style transformer: the model failed on step " +
                   std::to_string(update->ntimestep) + ": " + failure);
  if (forces.numel() != 3 * n || per_atom_energy.numel() != n_local ||
      edge_gradient.numel() != 3 * edges)
    error->one(FLERR,
               "pair_style transformer: forward_neighbors returned forces, per-atom energies or "
               "pair gradients of the wrong size; the file does not follow the mdplugin export "
               "contract (version 2)");
  if (!all_finite({forces, per_atom_energy, edge_gradient}))
    error->one(FLERR, not_finite_message(update->ntimestep));

  LocalResult result;
  result.forces.assign(forces.data_ptr<double>(), forces.data_ptr<double>() + 3 * n);
  result.per_atom_energy.assign(per_atom_energy.data_ptr<double>(),
                                per_atom_energy.data_ptr<double>() + n_local);
  result.edge_gradient.assign(edge_gradient.data_ptr<double>(),
                              edge_gradient.data_ptr<double>() + 3 * edges);
  return result;
}

// Ghost atoms get forces too: with newton_pair on, reverse communication adds them to the owners.
void PairTransformer::scatter_local_forces(const Neighborhood &neighborhood,
                                           const LocalResult &result)
{
  double **f = atom->f;
  for (size_t m = 0; m < neighborhood.atom_index.size(); m++)
    for (int k = 0; k < 3; k++) f[neighborhood.atom_index[m]][k] += result.forces[3 * m + k];
}

/* ----------------------------------------------------------------------
   The energy is the sum over local atoms only (each atom is local on exactly one rank).
   The virial of this rank's energy is W_ab = sum_i f_a,i r_b,i over local and ghost atoms, which
   the pair gradients g_e = dE/dd_e (d_e = r_j - r_i) give without an origin:
   W_ab = -sum_e g_a,e d_b,e, the strain derivative -dE/de_ab for x_a -> x_a + e_ab x_b (the
   convention of the global path and of fix numdiff/virial). Ghosts are explicit periodic images,
   so the cell needs no term of its own. The per-atom virial gives half of each pair's term to
   each of its atoms (ghosts' halves return to their owners by reverse communication), so compute
   stress/atom sums to the global virial. Order: xx, yy, zz, xy, xz, yz.
------------------------------------------------------------------------- */

void PairTransformer::tally_local_energy_and_virial(const Neighborhood &neighborhood,
                                                    const LocalResult &result)
{
  for (int64_t m = 0; m < neighborhood.n_local; m++) {
    if (eflag_global) eng_vdwl += result.per_atom_energy[m];
    if (eflag_atom) eatom[neighborhood.atom_index[m]] += result.per_atom_energy[m];
  }
  if (!vflag_either) return;
  const auto &r = neighborhood.positions;
  for (size_t e = 0; e < neighborhood.centers.size(); e++) {
    const int64_t i = neighborhood.centers[e], j = neighborhood.neighbors[e];
    const double *g = &result.edge_gradient[3 * e];
    double d[3];
    for (int k = 0; k < 3; k++) d[k] = r[3 * j + k] - r[3 * i + k];
    const double v[6] = {-g[0] * d[0], -g[1] * d[1], -g[2] * d[2],
                         -g[0] * d[1], -g[0] * d[2], -g[1] * d[2]};
    for (int k = 0; k < 6; k++) {
      if (vflag_global) virial[k] += v[k];
      if (vflag_atom) {
        vatom[neighborhood.atom_index[i]][k] += 0.5 * v[k];
        vatom[neighborhood.atom_index[j]][k] += 0.5 * v[k];
      }
    }
  }
}

/* ----------------------------------------------------------------------
   local attention, block by block (export version 3). Ghosts reach the interaction range (+ skin)
   only, and each rank updates its own atoms only: block l reads the keys and values of the owned
   atoms' neighbours, local and ghost. Between blocks, forward communication copies every owner's
   new keys and values to its ghost copies (other ranks' and periodic images), so a rank computes
   nothing for its ghosts but the first block's keys and values, which depend on the element alone.
   Backwards, from the last block, the ghost rows of each block's key-value gradient go to their
   owners by reverse communication before the block that made them is back-propagated. The pairs
   are those with an owned centre, each on one rank; their gradients give the forces (ghosts' by
   LAMMPS's reverse communication) and the virial, as on the ghost-shell path. Every rank makes the
   same 2 (depth - 1) exchanges, one that owns no atom too; a model failure aborts all ranks.
------------------------------------------------------------------------- */

void PairTransformer::compute_exchange()
{
  const Neighborhood neighborhood = collect_neighborhood(false);
  const int64_t n = static_cast<int64_t>(neighborhood.atom_index.size());
  const int64_t n_local = neighborhood.n_local;
  const int64_t edges = static_cast<int64_t>(neighborhood.centers.size());
  const bool evaluate = n_local > 0;    // a rank without owned model atoms still exchanges
  exchanged.assign(static_cast<size_t>(atom->nlocal + atom->nghost) * exchange_width, 0.0);

  auto fail = [&](const std::exception &exception) {
    error->one(FLERR, "pair_style transformer: the model failed on step " +
                   std::to_string(update->ntimestep) + ": " + readable_error(exception));
  };
  c10::AutoGradMode gradients_on(true);    // the engine runs autograd between the blocks
  torch::Tensor displacements, numbers, index, encoded, bias, encoded_leaf, bias_leaf, core, tokens, keys_values;
  // per block l: its token input (a leaf from l = 1), its keys and values of every atom (a leaf from
  // l = 1), its output, and the owned atoms' keys and values computed from the previous output
  std::vector<torch::Tensor> token_inputs(block_count), key_inputs(block_count), outputs(block_count),
      owned_keys(block_count);
  torch::Tensor per_atom_energy;
  auto keys = model.get_method("exchange_keys");
  try {
    if (evaluate) {
      auto pairs = torch::empty({2, edges}, torch::kInt64);
      std::copy(neighborhood.centers.begin(), neighborhood.centers.end(), pairs.data_ptr<int64_t>());
      std::copy(neighborhood.neighbors.begin(), neighborhood.neighbors.end(),
                pairs.data_ptr<int64_t>() + edges);
      auto d = torch::empty({edges, 3}, torch::kFloat64);
      double *dd = d.data_ptr<double>();
      const auto &r = neighborhood.positions;
      for (int64_t e = 0; e < edges; e++) {
        const int64_t i = neighborhood.centers[e], j = neighborhood.neighbors[e];
        for (int k = 0; k < 3; k++) dd[3 * e + k] = r[3 * j + k] - r[3 * i + k];
      }
      displacements = d.to(device, input_dtype()).requires_grad_(true);
      numbers = torch::from_blob(const_cast<int64_t *>(neighborhood.atomic_numbers.data()), {n},
                                 torch::kInt64)
                    .to(device, torch::kInt64, false, true);
      const auto first = model.get_method("exchange_tokens")(
                                  {numbers, static_cast<int64_t>(charge), static_cast<int64_t>(multiplicity)})
                             .toTensor();
      keys_values = keys({static_cast<int64_t>(0), first}).toTensor().detach();    // no position in them
      tokens = first.slice(0, 0, n_local);
      const auto geometry =
          model.get_method("exchange_geometry")({pairs.to(device), displacements, numbers, n_local}).toTuple();
      index = geometry->elements().at(0).toTensor();
      encoded = geometry->elements().at(1).toTensor();
      bias = geometry->elements().at(2).toTensor();
      core = geometry->elements().at(3).toTensor();
      // the blocks read the geometry through leaves: each block's backward stops there, and one last
      // backward takes the summed gradient through the displacement encoding (once, not once per block)
      encoded_leaf = encoded.detach().requires_grad_(true);
      bias_leaf = bias.detach().requires_grad_(true);
    }
  } catch (const std::exception &exception) {
    fail(exception);
  }

  auto block = model.get_method("exchange_block");
  for (int layer = 0; layer < block_count; layer++) {
    torch::Tensor owned;
    try {
      if (evaluate) {
        token_inputs[layer] = tokens;
        key_inputs[layer] = keys_values;
        outputs[layer] =
            block({static_cast<int64_t>(layer), tokens, keys_values, index, encoded_leaf, bias_leaf}).toTensor();
        if (layer + 1 < block_count) {
          owned = keys({static_cast<int64_t>(layer + 1), outputs[layer]}).toTensor();
          owned_keys[layer + 1] = owned;
          tokens = outputs[layer].detach().requires_grad_(true);
        }
      }
    } catch (const std::exception &exception) {
      fail(exception);
    }
    if (layer + 1 < block_count) keys_values = share_with_ghosts(neighborhood, owned);
  }

  try {
    if (evaluate) {
      per_atom_energy = model.get_method("exchange_energies")(
                                 {outputs.back(), numbers.slice(0, 0, n_local), core})
                            .toTensor();
      torch::autograd::backward({per_atom_energy.sum()}, {}, true);
    }
  } catch (const std::exception &exception) {
    fail(exception);
  }
  for (int layer = block_count - 1; layer > 0; layer--) {
    const torch::Tensor key_gradient = gather_from_ghosts(neighborhood, key_inputs[layer]);
    try {
      if (evaluate) {
        torch::Tensor token_gradient = token_inputs[layer].grad();
        if (!token_gradient.defined()) token_gradient = torch::zeros_like(outputs[layer - 1]);
        torch::autograd::backward({outputs[layer - 1], owned_keys[layer]}, {token_gradient, key_gradient});
      }
    } catch (const std::exception &exception) {
      fail(exception);
    }
  }
  if (!evaluate) return;
  try {
    std::vector<torch::Tensor> roots, gradients;
    for (const auto &[root, leaf] : {std::make_pair(encoded, encoded_leaf), std::make_pair(bias, bias_leaf)})
      if (leaf.grad().defined() && root.requires_grad()) {
        roots.push_back(root);
        gradients.push_back(leaf.grad());
      }
    if (!roots.empty()) torch::autograd::backward(roots, gradients);
  } catch (const std::exception &exception) {
    fail(exception);
  }
  torch::Tensor edge_gradient = displacements.grad();
  if (!edge_gradient.defined()) edge_gradient = torch::zeros({edges, 3}, torch::kFloat64);
  edge_gradient = host_double(edge_gradient);
  per_atom_energy = host_double(per_atom_energy);
  if (per_atom_energy.numel() != n_local || edge_gradient.numel() != 3 * edges)
    error->one(FLERR, "pair_style transformer: the per-block methods returned per-atom energies or "
                      "pair gradients of the wrong size; the file does not follow the mdplugin "
                      "export contract (version 3)");
  if (!all_finite({per_atom_energy, edge_gradient}))
    error->one(FLERR, not_finite_message(update->ntimestep));

  LocalResult result;
  result.per_atom_energy.assign(per_atom_energy.data_ptr<double>(),
                                per_atom_energy.data_ptr<double>() + n_local);
  result.edge_gradient.assign(edge_gradient.data_ptr<double>(),
                              edge_gradient.data_ptr<double>() + 3 * edges);
  // F_i += g, F_j -= g for each pair's gradient g = dE/d(r_j - r_i)
  result.forces.assign(3 * n, 0.0);
  for (int64_t e = 0; e < edges; e++)
    for (int k = 0; k < 3; k++) {
      result.forces[3 * neighborhood.centers[e] + k] += result.edge_gradient[3 * e + k];
      result.forces[3 * neighborhood.neighbors[e] + k] -= result.edge_gradient[3 * e + k];
    }
  scatter_local_forces(neighborhood, result);
  tally_local_energy_and_virial(neighborhood, result);
}

// The first `count` rows of `rows` [>= count, exchange_width] into the comm buffer at their atoms'
// LAMMPS indices; every other atom's row zero.
void PairTransformer::rows_to_buffer(const Neighborhood &neighborhood, const torch::Tensor &rows, int64_t count)
{
  std::fill(exchanged.begin(), exchanged.end(), 0.0);
  if (!rows.defined()) return;
  const torch::Tensor host = host_double(rows);
  const double *row = host.data_ptr<double>();
  for (int64_t m = 0; m < count; m++)
    std::copy(row + m * exchange_width, row + (m + 1) * exchange_width,
              exchanged.begin() + static_cast<size_t>(neighborhood.atom_index[m]) * exchange_width);
}

// The comm buffer's rows of the first `count` model atoms, as `like` (device, dtype).
torch::Tensor PairTransformer::buffer_to_rows(const Neighborhood &neighborhood, int64_t count,
                                              const torch::Tensor &like) const
{
  auto rows = torch::empty({count, exchange_width}, torch::kFloat64);
  double *out = rows.data_ptr<double>();
  for (int64_t m = 0; m < count; m++) {
    const double *from = exchanged.data() + static_cast<size_t>(neighborhood.atom_index[m]) * exchange_width;
    std::copy(from, from + exchange_width, out + m * exchange_width);
  }
  return rows.to(like.device(), like.scalar_type());
}

// Every model atom's row [n, exchange_width] (a leaf for autograd): the owned atoms' `owned` rows,
// and the ghosts' copies of their owners' rows by forward communication.
torch::Tensor PairTransformer::share_with_ghosts(const Neighborhood &neighborhood, const torch::Tensor &owned)
{
  rows_to_buffer(neighborhood, owned, neighborhood.n_local);
  comm->forward_comm(this);
  if (!owned.defined()) return {};
  const int64_t n = static_cast<int64_t>(neighborhood.atom_index.size());
  return buffer_to_rows(neighborhood, n, owned).requires_grad_(true);
}

// The owned atoms' gradient [n_local, exchange_width] of a leaf `share_with_ghosts` made, with the
// gradients of their ghost copies (here and on other ranks) added by reverse communication.
torch::Tensor PairTransformer::gather_from_ghosts(const Neighborhood &neighborhood, const torch::Tensor &shared)
{
  const int64_t n = static_cast<int64_t>(neighborhood.atom_index.size());
  rows_to_buffer(neighborhood, shared.defined() ? shared.grad() : torch::Tensor(), n);
  comm->reverse_comm(this);
  if (!shared.defined()) return {};
  return buffer_to_rows(neighborhood, neighborhood.n_local, shared);
}

int PairTransformer::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  for (int i = 0; i < n; i++)
    std::copy_n(exchanged.data() + static_cast<size_t>(list[i]) * exchange_width, exchange_width,
                buf + static_cast<size_t>(i) * exchange_width);
  return n * exchange_width;
}

void PairTransformer::unpack_forward_comm(int n, int first, double *buf)
{
  std::copy_n(buf, static_cast<size_t>(n) * exchange_width,
              exchanged.data() + static_cast<size_t>(first) * exchange_width);
}

int PairTransformer::pack_reverse_comm(int n, int first, double *buf)
{
  std::copy_n(exchanged.data() + static_cast<size_t>(first) * exchange_width,
              static_cast<size_t>(n) * exchange_width, buf);
  return n * exchange_width;
}

void PairTransformer::unpack_reverse_comm(int n, int *list, double *buf)
{
  for (int i = 0; i < n; i++) {
    double *row = exchanged.data() + static_cast<size_t>(list[i]) * exchange_width;
    const double *from = buf + static_cast<size_t>(i) * exchange_width;
    for (int k = 0; k < exchange_width; k++) row[k] += from[k];
  }
}

/* ----------------------------------------------------------------------
   local attention, one rank, periodic in x, y and z: the export's periodic forward on the owned
   atoms and the cell. It folds periodic images into cell shifts, so each atom is computed once,
   where the ghost path computes every ghost within receptive_field + skin too (in a small box
   many times the owned atoms). Positions need not be wrapped: atoms that drifted out of the box
   since the last reneighbouring are fine. Forces land on owned atoms only.
   The export's virial V is -dE/de for r -> r (1 + e) with r a row vector, the transpose of
   LAMMPS's x_a -> x_a + e_ab x_b: W_ab = V_ba. It has no per-atom split, so compute() takes the
   ghost path on steps that need per-atom virials. The ghost range and the neighbor list stay as
   they are, for those steps and for the closest-approach check.
------------------------------------------------------------------------- */

void PairTransformer::compute_periodic()
{
  const int *type = atom->type;
  double **x = atom->x;
  std::vector<int> owned;    // the LAMMPS index of each model atom
  std::vector<int64_t> atomic_numbers;
  std::vector<double> positions;
  for (int i = 0; i < atom->nlocal; i++) {
    if (!is_mapped(type[i])) continue;
    owned.push_back(i);
    atomic_numbers.push_back(type_to_atomic_number[type[i]]);
    positions.insert(positions.end(), x[i], x[i] + 3);
  }
  if (owned.empty()) return;
  if (!inverse_shortest_squared.empty()) monitor_local_pairs();

  // rows a, b, c of LAMMPS's upper-triangular h = (xprd, yprd, zprd, yz, xz, xy)
  const double *h = domain->h;
  double cell[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};
  const int64_t n = static_cast<int64_t>(owned.size());
  torch::Tensor forces, per_atom_energy, virial_tensor;
  std::string failure;
  try {
    auto as_input = [&](double *data, torch::IntArrayRef shape) {
      return torch::from_blob(data, shape, torch::kFloat64).to(device, input_dtype(), false, true);
    };
    auto numbers = torch::from_blob(atomic_numbers.data(), {n}, torch::kInt64)
                       .to(device, torch::kInt64, false, true);
    auto pbc = torch::ones({3}, torch::TensorOptions().dtype(torch::kBool).device(device));
    std::vector<torch::jit::IValue> inputs{as_input(positions.data(), {n, 3}),
                                           numbers,
                                           static_cast<int64_t>(charge),
                                           static_cast<int64_t>(multiplicity),
                                           as_input(cell, {3, 3}),
                                           pbc};
    const auto outputs = model.forward(inputs).toTuple();
    forces = host_double(outputs->elements().at(1).toTensor());
    per_atom_energy = host_double(outputs->elements().at(2).toTensor());
    virial_tensor = host_double(outputs->elements().at(3).toTensor());
  } catch (const std::exception &exception) {
    failure = readable_error(exception);
  }
  if (!failure.empty())
    error->one(FLERR, "pair_style transformer: the model failed on step " +
                   std::to_string(update->ntimestep) + ": " + failure);
  if (forces.numel() != 3 * n || per_atom_energy.numel() != n || virial_tensor.numel() != 9)
    error->one(FLERR,
               "pair_style transformer: the periodic forward returned forces, per-atom energies "
               "or a virial of the wrong size; the file does not follow the mdplugin export "
               "contract (version 2)");
  if (!all_finite({forces, per_atom_energy, virial_tensor}))
    error->one(FLERR, not_finite_message(update->ntimestep));

  if (deviation_due()) {    // member 0's step, for the deviation that follows in compute()
    lead_forces = forces.reshape({n, 3}).clone();
    lead_energy = per_atom_energy.sum().item<double>();
    lead_step = update->ntimestep;
  }
  const double *force = forces.data_ptr<double>();
  const double *energy = per_atom_energy.data_ptr<double>();
  double **f = atom->f;
  for (int64_t m = 0; m < n; m++) {
    for (int k = 0; k < 3; k++) f[owned[m]][k] += force[3 * m + k];
    if (eflag_global) eng_vdwl += energy[m];
    if (eflag_atom) eatom[owned[m]] += energy[m];
  }
  if (vflag_global) {
    const double *v = virial_tensor.data_ptr<double>();    // row-major V
    const double w[6] = {v[0], v[4], v[8], v[3], v[6], v[7]};    // xx yy zz xy=V_yx xz yz
    for (int k = 0; k < 6; k++) virial[k] += w[k];
  }
}

// A local committee on one rank in a periodic box: the owned atoms and the cell, as the periodic
// forward takes them (also on steps whose per-atom virial used the ghost-atom path).
void PairTransformer::deviation_periodic()
{
  std::vector<int64_t> atomic_numbers;
  std::vector<double> positions;
  for (int i = 0; i < atom->nlocal; i++) {
    if (!is_mapped(atom->type[i])) continue;
    atomic_numbers.push_back(type_to_atomic_number[atom->type[i]]);
    positions.insert(positions.end(), atom->x[i], atom->x[i] + 3);
  }
  if (atomic_numbers.empty()) return;
  const double *h = domain->h;
  double cell[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};
  const int64_t n = static_cast<int64_t>(atomic_numbers.size());
  auto as_input = [&](double *data, torch::IntArrayRef shape) {
    return torch::from_blob(data, shape, torch::kFloat64).to(device, input_dtype(), false, true);
  };
  auto numbers = torch::from_blob(atomic_numbers.data(), {n}, torch::kInt64).to(device, torch::kInt64, false, true);
  std::vector<torch::jit::IValue> inputs{as_input(positions.data(), {n, 3}), numbers,
                                         static_cast<int64_t>(charge), static_cast<int64_t>(multiplicity),
                                         as_input(cell, {3, 3}),
                                         torch::ones({3}, torch::TensorOptions().dtype(torch::kBool).device(device))};
  // the periodic forward of this step gave member 0's forces; a step of the ghost-atom path did not
  if (lead_step == update->ntimestep && lead_forces.size(0) == n)
    report_deviation(std::move(inputs), lead_forces, lead_energy);
  else
    report_deviation(std::move(inputs));
}

// The closest-approach check of the periodic path: owned atoms' pairs within the range, from the
// neighbor list (the same pairs collect_neighborhood considers).
void PairTransformer::monitor_local_pairs()
{
  const int *type = atom->type;
  double **x = atom->x;
  const double range_squared = metadata.interaction_range * metadata.interaction_range;
  ClosestPair closest;
  for (int ii = 0; ii < list->inum; ii++) {
    const int i = list->ilist[ii];
    if (!is_mapped(type[i])) continue;
    const int *neighbors = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = neighbors[jj] & NEIGHMASK;
      if (!is_mapped(type[j])) continue;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double distance_squared = dx * dx + dy * dy + dz * dz;
      if (distance_squared < range_squared)
        consider_pair(closest, type_to_atomic_number[type[i]], type_to_atomic_number[type[j]],
                      distance_squared);
    }
  }
  report_domain(closest);
}

// Why the periodic forward cannot evaluate this run ("" when it can).
std::string PairTransformer::why_not_periodic() const
{
  if (!metadata.local)
    return "the model " + model_name() + " has global attention and takes no cell";
  if (comm->nprocs > 1)
    return "LAMMPS runs on " + std::to_string(comm->nprocs) +
        " MPI ranks, and the periodic forward needs all atoms on one rank";
  if (!domain->xperiodic || !domain->yperiodic || !domain->zperiodic)
    return "the box is not periodic in x, y and z (boundary p p p)";
  // it strains atoms and ghosts but not the box, so it measures the virial of the ghost path only
  if (!modify->get_fix_by_style("^numdiff/virial").empty())
    return "fix numdiff/virial strains the atoms and ghost atoms but not the cell the periodic "
           "forward reads";
  return "";
}

/* ----------------------------------------------------------------------
   How close atoms come, relative to the shortest distance of the same element pair in the
   training data: below 1 the model extrapolates. The smallest ratio over the pairs this style
   sees (all pairs for global attention, the pairs within the interaction range for local
   attention) is pvector[0], `compute pair transformer` [1]; optional keywords warn or stop.
------------------------------------------------------------------------- */

void PairTransformer::consider_pair(ClosestPair &closest, int64_t zi, int64_t zj,
                                    double distance_squared) const
{
  const int element_pair = static_cast<int>(zi * ELEMENT_SLOTS + zj);
  const double inverse = inverse_shortest_squared[element_pair];
  if (inverse > 0.0 && distance_squared * inverse < closest.ratio_squared) {
    closest.ratio_squared = distance_squared * inverse;
    closest.element_pair = element_pair;
  }
}

void PairTransformer::report_domain(ClosestPair closest)
{
  struct {
    double value;
    int index;
  } mine{closest.ratio_squared, closest.element_pair}, smallest;
  MPI_Allreduce(&mine, &smallest, 1, MPI_DOUBLE_INT, MPI_MINLOC, world);
  const double ratio = std::sqrt(smallest.value);
  // compute pair sums pvector over ranks: one rank holds the value, the others 0
  pvector[0] = comm->me == 0 ? ratio : 0.0;
  if (!std::isfinite(ratio)) return;

  const int64_t zi = smallest.index / ELEMENT_SLOTS, zj = smallest.index % ELEMENT_SLOTS;
  const double shortest = 1.0 / std::sqrt(inverse_shortest_squared[smallest.index]);
  const std::string what =
      fmt::format("on step {} two atoms {} are {:.3f} Å apart, {:.3f} of the shortest {} "
                  "distance in the model's training data ({:.3f} Å)",
                  update->ntimestep, pair_name(zi, zj), ratio * shortest, ratio,
                  pair_name(zi, zj), shortest);
  if (domain_stop > 0.0 && ratio < domain_stop)
    error->all(FLERR,
               "pair_style transformer: " + what + ", below domain_stop " +
                   fmt::format("{}", domain_stop) +
                   ": the model is extrapolating. Check the structure, the pair_coeff mapping "
                   "and the timestep, or lower domain_stop");
  const bool below = domain_warn > 0.0 && ratio < domain_warn;
  if (below && !below_warn && comm->me == 0)
    error->warning(FLERR,
                   "pair_style transformer: " + what + ", below domain_warn " +
                       fmt::format("{}", domain_warn) +
                       ": the model is extrapolating (warned again only after the ratio "
                       "recovers)");
  below_warn = below;
}

/* ----------------------------------------------------------------------
   pair_style transformer [device cpu|cuda] [dtype float32|float64] [charge Q] [spin M]
                          [threads N] [domain_warn F] [domain_stop F] [periodic auto|yes|no]
                          [exchange auto|yes|no] [deviation N] [deviation_warn F]
                          [deviation_stop F] [deviation_file path]
------------------------------------------------------------------------- */

void PairTransformer::settings(int narg, char **arg)
{
  check_box_and_units();
  // a re-issued pair_style starts from the defaults: a keyword left out is not kept from before
  const torch::Device previous_device = device;
  device = torch::Device(torch::kCPU);
  dtype_name.clear();
  charge = 0;
  multiplicity = 1;
  threads = default_threads();
  domain_warn = domain_stop = 0.0;
  below_warn = false;
  periodic_mode = PERIODIC_AUTO;
  exchange_mode = EXCHANGE_AUTO;
  deviation_every = 0;
  deviation_warn = deviation_stop = 0.0;
  deviation_file.clear();
  deviation_file_started = false;
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
    } else if (keyword == "threads") {
      threads = utils::inumeric(FLERR, value, false, lmp);
      if (threads < 1)
        error->all(FLERR,
                   "pair_style transformer: threads is the number of libtorch threads per MPI "
                   "rank, at least 1, not " + value);
    } else if (keyword == "domain_warn" || keyword == "domain_stop") {
      const double threshold = utils::numeric(FLERR, value, false, lmp);
      if (threshold <= 0.0)
        error->all(FLERR,
                   "pair_style transformer: " + keyword + " is a fraction of the shortest "
                   "training distance of each element pair (e.g. 0.8), so it must be positive, "
                   "not " + value);
      (keyword == "domain_warn" ? domain_warn : domain_stop) = threshold;
    } else if (keyword == "deviation") {
      deviation_every = utils::inumeric(FLERR, value, false, lmp);
      if (deviation_every < 0)
        error->all(FLERR, "pair_style transformer: deviation is a number of steps (0 = never), not " +
                              value);
    } else if (keyword == "deviation_warn" || keyword == "deviation_stop") {
      const double threshold = utils::numeric(FLERR, value, false, lmp);
      if (threshold <= 0.0)
        error->all(FLERR, "pair_style transformer: " + keyword +
                              " is a force deviation in eV/Å (e.g. 0.3), so it must be positive, not " +
                              value);
      (keyword == "deviation_warn" ? deviation_warn : deviation_stop) = threshold;
    } else if (keyword == "deviation_file") {
      deviation_file = value;
    } else if (keyword == "exchange") {
      if (value == "auto")
        exchange_mode = EXCHANGE_AUTO;
      else if (value == "yes")
        exchange_mode = EXCHANGE_YES;
      else if (value == "no")
        exchange_mode = EXCHANGE_NO;
      else
        error->all(FLERR,
                   "pair_style transformer: exchange must be auto, yes or no, not '" + value + "'");
    } else if (keyword == "periodic") {
      if (value == "auto")
        periodic_mode = PERIODIC_AUTO;
      else if (value == "yes")
        periodic_mode = PERIODIC_YES;
      else if (value == "no")
        periodic_mode = PERIODIC_NO;
      else
        error->all(FLERR,
                   "pair_style transformer: periodic must be auto, yes or no, not '" + value + "'");
    } else {
      error->all(FLERR,
                 "pair_style transformer: unknown keyword '" + keyword +
                     "'; the keywords are device, dtype, charge, spin, threads, domain_warn, "
                     "domain_stop, periodic, exchange, deviation, deviation_warn, deviation_stop and "
                     "deviation_file");
    }
  }
  // the model of an earlier pair_coeff moves with the device (LAMMPS keeps pair_coeff across pair_style)
  if (model_loaded && device != previous_device) load_model(model_path);
  // libtorch's thread pool is per process, so this is the count for this rank
  at::set_num_threads(threads);
  if (comm->me == 0)
    utils::logmesg(lmp, "pair_style transformer: {} libtorch thread(s) per MPI rank\n",
                   at::get_num_threads());
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
  check_box_and_units();    // again, now that the NULL types (ML/MM) are known
}

void PairTransformer::init_style()
{
  check_box_and_units();
  check_masses();
  check_charge_domain();
  const std::string why_not = why_not_periodic();
  if (periodic_mode == PERIODIC_YES && !why_not.empty())
    error->all(FLERR,
               "pair_style transformer: periodic yes asks for the export's periodic forward, but " +
                   why_not + "; use periodic auto (or no) for the neighbor-list path");
  periodic_forward = periodic_mode != PERIODIC_NO && why_not.empty();
  const bool deviation_asked = deviation_every > 0 || deviation_warn > 0.0 || deviation_stop > 0.0 ||
      !deviation_file.empty();
  if (deviation_asked && metadata.entries.count("committee") == 0)
    error->all(FLERR,
               "pair_style transformer: deviation keywords need a committee export (" + model_name() +
                   " is a single model); write one with `mdplugin export M0.pt M1.pt ...`");
  if (deviation_asked && deviation_every == 0)
    error->all(FLERR, "pair_style transformer: deviation_warn, deviation_stop and deviation_file "
                      "need 'deviation N', the steps between deviations");
  if (deviation_every > 0 && metadata.local && !periodic_forward)
    error->all(FLERR,
               "pair_style transformer: the committee's deviation of a local model needs the whole "
               "system on one rank in a periodic box (" + (why_not.empty() ? std::string("periodic no was given") : why_not) +
                   "); run the deviation on one rank, or leave out the deviation keywords");
  if (deviation_every > 0 && comm->me == 0 && !deviation_file.empty() && !deviation_file_started) {
    deviation_file_started = true;    // started once per pair_style: later runs append to it
    FILE *out = fopen(deviation_file.c_str(), "w");
    if (out == nullptr)
      error->one(FLERR, "pair_style transformer: cannot write deviation_file " + deviation_file);
    fmt::print(out, "# step max_force_deviation min_force_deviation mean_force_deviation "
                    "energy_deviation_per_atom (eV/Å, eV)\n");
    fclose(out);
  }
  if (!metadata.local) {
    if (atom->tag_enable == 0)
      error->all(FLERR,
                 "pair_style transformer needs atom IDs to order atoms across ranks; remove "
                 "'atom_modify id no'");
    if (3 * atom->natoms > MAXSMALLINT)
      error->all(FLERR,
                 "pair_style transformer: too many atoms for one global-attention evaluation");
    return;    // no neighbor list: the model reads every atom's coordinates itself
  }

  // local attention: forces on ghosts, one ghost range for all types, a full neighbor list (each
  // pair in both directions, as the model takes it)
  if (force->newton_pair == 0)
    error->all(FLERR,
               "pair_style transformer with a local model (" + model_name() +
                   ") requires 'newton on' (or 'newton on off'): the model computes forces on "
                   "ghost atoms, which only LAMMPS's reverse communication returns to their "
                   "owners");
  if (comm->mode != Comm::SINGLE)
    error->all(FLERR,
               "pair_style transformer with a local model requires 'comm_modify mode single'; "
               "its ghost range is one distance for all types");
  const std::string why_not_blocks = why_not_exchange();
  if (exchange_mode == EXCHANGE_YES && !why_not_blocks.empty())
    error->all(FLERR, "pair_style transformer: exchange yes asks for the per-block path, but " +
                          why_not_blocks + "; use exchange auto (or no) for the ghost-shell path");
  exchange_path = exchange_mode != EXCHANGE_NO && why_not_blocks.empty();
  comm_forward = comm_reverse = exchange_path ? exchange_width : 0;
  // Comm sizes its buffers from force->pair: under hybrid/overlay that is the hybrid style, which took
  // its sizes from the sub-styles before pair_coeff loaded the model (it would overflow them)
  if (force->pair != this) {
    force->pair->comm_forward = std::max(force->pair->comm_forward, comm_forward);
    force->pair->comm_reverse = std::max(force->pair->comm_reverse, comm_reverse);
  }

  if (exchange_path) {
    // a full list of the owned atoms' pairs; ghosts (interaction range + skin from the cutoff)
    // receive their tokens from their owners between blocks
    ghostneigh = 0;
    // (no pair-count estimate: the pairs are the owned atoms' own, whatever the ghosts number)
    neighbor->add_request(this, NeighConst::REQ_FULL);
  } else {
    // a full list that also lists the neighbors of ghost atoms, whose tokens feed the local
    // atoms' energies. An atom's energy depends on atoms up to receptive_field away (depth x
    // interaction range), so ghosts must reach that far (+ skin, as atoms move between
    // neighbor list builds), while the neighbor list itself needs only the interaction range.
    ghostneigh = 1;
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    const double ghost_range = metadata.receptive_field + neighbor->skin;
    if (comm->cutghostuser < ghost_range) comm->cutghostuser = ghost_range;
    check_pair_count(comm->cutghostuser);
  }
  if (comm->me != 0) return;
  const std::string path = exchange_path
      ? fmt::format("block by block, ghost atoms out to the interaction range + skin, their keys "
                    "and values exchanged between blocks ({} exchange(s) of {} numbers per ghost each "
                    "way per step)",
                    block_count - 1, exchange_width)
      : fmt::format("ghost atoms out to {} Å (receptive field {} Å + skin), each rank evaluating "
                    "its ghosts too{}",
                    comm->cutghostuser, metadata.receptive_field,
                    why_not_blocks.empty() ? " (exchange no)" : " (no per-block path: " + why_not_blocks + ")");
  if (periodic_forward)
    utils::logmesg(lmp,
                   "pair_style transformer: local model, interaction range {} Å; one MPI rank and a "
                   "periodic box: the export's periodic forward evaluates the owned atoms (steps with "
                   "per-atom virials: {})\n",
                   metadata.interaction_range, path);
  else
    utils::logmesg(lmp, "pair_style transformer: local model, interaction range {} Å: {}\n",
                   metadata.interaction_range, path);
}

// Why this run cannot take the per-block exchange path ("" when it can).
std::string PairTransformer::why_not_exchange() const
{
  if (!metadata.exchange)
    return "the export " + model_name() + " is format version " + metadata.entries.at("format_version") +
        ", without the per-block methods of version 3 (re-export the checkpoint with this mdplugin)";
  return "";
}

double PairTransformer::init_one(int i, int j)
{
  if (!metadata.local) return NOMINAL_CUTOFF;
  cutghost[i][j] = cutghost[j][i] = metadata.interaction_range;
  return metadata.interaction_range;
}

/* ---------------------------------------------------------------------- */

void PairTransformer::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(cutghost, n + 1, n + 1, "pair:cutghost");
  for (int i = 0; i <= n; i++)
    for (int j = 0; j <= n; j++) setflag[i][j] = 0;
  type_to_atomic_number.assign(n + 1, 0);
}

void PairTransformer::load_model(const std::string &path)
{
  try {
    auto [module, checked] = load_export(path, device);
    model = std::move(module);
    metadata = std::move(checked);
  } catch (const ExportError &failure) {
    error->all(FLERR,
               std::string("pair_style transformer: ") + failure.what() +
                   (std::string(failure.what()).rfind("cannot open", 0) == 0
                        ? "; check the path in pair_coeff (relative paths start in the directory "
                          "LAMMPS runs in)"
                        : ""));
  }
  model_path = path;
  model_loaded = true;
  ghostneigh = metadata.local ? 1 : 0;    // the ghost-shell path reads ghosts' neighbors (init_style)
  exchange_width = block_count = 0;
  if (metadata.exchange) {    // load_export checked the per-block methods
    exchange_width = 2 * static_cast<int>(model.attr("width").toInt());    // keys and values
    block_count = static_cast<int>(model.attr("depth").toInt());
  }

  inverse_shortest_squared.clear();
  if (!metadata.shortest_distance.empty()) {
    inverse_shortest_squared.assign(ELEMENT_SLOTS * ELEMENT_SLOTS, 0.0);
    for (const auto &[pair, distance] : metadata.shortest_distance) {
      inverse_shortest_squared[pair.first * ELEMENT_SLOTS + pair.second] = 1.0 / (distance * distance);
      inverse_shortest_squared[pair.second * ELEMENT_SLOTS + pair.first] = 1.0 / (distance * distance);
    }
  } else if (domain_warn > 0.0 || domain_stop > 0.0) {
    error->all(FLERR,
               "pair_style transformer: domain_warn and domain_stop need the shortest "
               "distances of the training data, which '" + path + "' does not carry (no "
               "shortest_distance in its metadata); re-export the checkpoint with a newer "
               "`mdplugin export`, or drop these keywords");
  }
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

  const auto &elements = metadata.elements;
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
    const auto found = std::find(elements.begin(), elements.end(), name);
    if (found == elements.end())
      error->all(FLERR,
                 "pair_coeff maps atom type " + std::to_string(type) + " to element '" + name +
                     "', which is not one of the model's elements (" + join(elements) +
                     "); fix the pair_coeff mapping or use a model trained on that element");
    type_to_atomic_number[type] = metadata.atomic_numbers[found - elements.begin()];
    mapped++;
  }
  if (mapped == 0) error->all(FLERR, "pair_coeff maps every atom type to NULL; map at least one");

  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = (is_mapped(i) && is_mapped(j)) ? 1 : 0;

  // element pairs the training data never showed cannot be monitored: say so once
  if (!inverse_shortest_squared.empty() && comm->me == 0) {
    std::vector<std::string> unmonitored;
    for (int i = 1; i <= ntypes; i++)
      for (int j = i; j <= ntypes; j++) {
        const int64_t zi = type_to_atomic_number[i], zj = type_to_atomic_number[j];
        const std::string name = zi && zj ? pair_name(zi, zj) : "";
        if (!name.empty() && inverse_shortest_squared[zi * ELEMENT_SLOTS + zj] == 0.0 &&
            std::find(unmonitored.begin(), unmonitored.end(), name) == unmonitored.end())
          unmonitored.push_back(name);
      }
    if (!unmonitored.empty())
      error->warning(FLERR,
                     "pair_style transformer: the training data of " + model_path +
                         " has no shortest distance for " + join(unmonitored) +
                         ", so the closest-approach check (compute pair transformer) leaves "
                         "those pairs out");
  }
}

// A type whose mass is far from its element's standard mass is most likely mapped to the wrong
// element (type 1 with mass 1.008 mapped to C). Isotopes are legitimate, so this only warns.
void PairTransformer::check_masses()
{
  if (comm->me != 0 || !atom->mass || !atom->mass_setflag) return;
  for (int type = 1; type <= atom->ntypes; type++) {
    const int64_t z = type_to_atomic_number[type];
    if (!z || !atom->mass_setflag[type]) continue;
    const double mass = atom->mass[type], standard = ELEMENTS[z].mass;
    if (std::fabs(mass - standard) > 0.5)
      error->warning(FLERR,
                     fmt::format("pair_style transformer: atom type {} has mass {} but pair_coeff "
                                 "maps it to {}, whose standard atomic mass is {:.3f} u; check "
                                 "the pair_coeff element order (ignore this for an isotope such "
                                 "as deuterium)",
                                 type, mass, ELEMENTS[z].symbol, standard));
  }
}

// The pairs one evaluation lists, estimated from the density before any is built: each rank holds its
// share of the box plus a shell of ghosts ghost_range thick, and every one of those atoms has
// density x (4/3) pi R^3 neighbours. Estimated for a box periodic in all directions (a shrink-wrapped
// box has no meaningful density); the same on every rank, so error->all is collective.
void PairTransformer::check_pair_count(double ghost_range)
{
  const double volume = domain->xprd * domain->yprd * domain->zprd;
  if (domain->nonperiodic || !(volume > 0.0) || atom->natoms == 0) return;
  const double density = static_cast<double>(atom->natoms) / volume;
  const double side = std::cbrt(volume / comm->nprocs);    // one rank's share, as a cube
  const double owned = density * side * side * side;
  const double ghosts = density * (std::pow(side + 2.0 * ghost_range, 3) - side * side * side);
  const double range = metadata.interaction_range;
  const double neighbours = density * 4.0 / 3.0 * 3.14159265358979 * range * range * range;
  const double pairs = (owned + ghosts) * neighbours;
  if (pairs <= MAX_PAIRS || ghosts <= 10.0 * owned) return;
  error->all(FLERR,
             fmt::format("pair_style transformer: the ghost shell of {} (receptive field {} Å + "
                         "skin = {} Å) around each MPI rank's ~{:.0f} atoms holds ~{:.3g} ghost atoms, "
                         "and with ~{:.0f} neighbours each within the interaction range {} Å one "
                         "evaluation would list ~{:.3g} pairs (~{:.0f} GB): the ghosts, not the system, "
                         "would fill the memory. Use a larger box (replicate), fewer MPI ranks, or a "
                         "model with a shorter interaction range",
                         model_name(), metadata.receptive_field, ghost_range, owned, ghosts,
                         neighbours, range, pairs, pairs * BYTES_PER_PAIR / 1e9));
}

// A charge or spin the training data never had is accepted by the model (its embedding covers a
// range) but extrapolated: on the shipped water model, charge 2 shifts a 96-atom box by 13 eV.
// Exports without the domain in mdplugin.txt (older ones) carry no list and are not checked.
void PairTransformer::check_charge_domain()
{
  if (comm->me != 0) return;
  const auto outside = [](const std::vector<int64_t> &trained, int value) {
    return !trained.empty() && std::find(trained.begin(), trained.end(), value) == trained.end();
  };
  const auto listed = [](const std::vector<int64_t> &values) {
    std::string text;
    for (const auto value : values) text += (text.empty() ? "" : " ") + std::to_string(value);
    return text;
  };
  // exports written before the text record carried the domain: a charged or open-shell run is flagged,
  // as most training data is neutral singlets (re-exporting the checkpoint adds the lists)
  if (metadata.charges.empty() && (charge != 0 || multiplicity != 1))
    error->warning(FLERR,
                   fmt::format("pair_style transformer: charge {} and spin {} asked for, but {} does not "
                               "record the charges and spins of its training data (exported before "
                               "mdplugin.txt carried them), so they cannot be checked: most models are "
                               "trained on neutral singlets only. Re-export the checkpoint with "
                               "`mdplugin export` to have them checked",
                               charge, multiplicity, model_name()));
  if (outside(metadata.charges, charge))
    error->warning(FLERR,
                   "pair_style transformer: charge " + std::to_string(charge) + " is not a total "
                   "charge of the training data of " + model_name() + " (it had: " +
                   listed(metadata.charges) + "); the model extrapolates and its energies are "
                   "not to be trusted: set the charge keyword to a trained one or train with "
                   "frames of this charge");
  if (outside(metadata.multiplicities, multiplicity))
    error->warning(FLERR,
                   "pair_style transformer: spin " + std::to_string(multiplicity) + " is not a "
                   "spin multiplicity of the training data of " + model_name() + " (it had: " +
                   listed(metadata.multiplicities) + "); the model extrapolates and its energies "
                   "are not to be trusted");
}

bool PairTransformer::is_mapped(int type) const
{
  return type_to_atomic_number[type] != 0;
}

bool PairTransformer::used_under_hybrid() const
{
  return force->pair_style && utils::strmatch(force->pair_style, "^hybrid");
}

std::string PairTransformer::model_name() const
{
  return "'" + model_path + "'";
}

// Default: float64 positions for a local model, which forms r_j - r_i in the input's precision
// before casting to its own dtype (a float32 model keeps its digits far from the origin, in large
// boxes); the export's dtype for a global one.
torch::Dtype PairTransformer::input_dtype() const
{
  const std::string name =
      !dtype_name.empty() ? dtype_name : (metadata.local ? std::string("float64") : metadata.dtype);
  return name == "float32" ? torch::kFloat32 : torch::kFloat64;
}

void PairTransformer::check_box_and_units()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               std::string("pair_style transformer requires 'units metal' (Å, eV, ps), not 'units ") +
                   update->unit_style + "'; the model works in Å and eV");
  const bool periodic = domain->xperiodic || domain->yperiodic || domain->zperiodic;
  if (!periodic || !model_loaded || metadata.local) return;
  // ML/MM: with some types left (NULL) to another style, the model computes a molecule, made
  // whole by the minimum image in compute_global; only the whole periodic system is refused
  if (static_cast<int>(type_to_atomic_number.size()) <= atom->ntypes) return;    // not mapped yet
  for (int type = 1; type <= atom->ntypes; type++)
    if (!is_mapped(type)) return;
  error->all(FLERR,
             "pair_style transformer: the model " + model_name() +
                 " has global attention (every atom interacts with every atom, with no "
                 "cutoff) and supports non-periodic boxes only; use 'boundary f f f' or "
                 "'boundary s s s', or a local model (model_kind local) for a periodic box");
}
