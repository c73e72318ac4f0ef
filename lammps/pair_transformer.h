/* -*- c++ -*- ----------------------------------------------------------
   pair_style transformer: a graph-free Transformer interatomic potential (mdplugin export)
   evaluated through libtorch.

   Two kinds of export, told apart by their metadata:
   - global attention (model_kind global): every atom interacts with every atom, with no cutoff.
     Each evaluation gathers the whole system (all MPI ranks' atoms, ordered by atom ID),
     evaluates it, and keeps the forces and energies of the locally owned atoms.
   - local attention (model_kind local): atoms attend to atoms within interaction_range, from a
     full neighbor list; forces on ghosts return to their owners through LAMMPS's reverse
     communication (newton_pair on). Three paths: block by block (export version 3, keyword
     exchange auto|yes|no), ghosts out to the interaction range and their keys and values exchanged between
     blocks; the ghost shell, ghosts out to receptive_field evaluated by each rank too; and on one
     rank in a box periodic in x, y and z, the export's periodic forward on the owned atoms alone
     (keyword periodic auto|yes|no).
------------------------------------------------------------------------- */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(transformer,PairTransformer);
// clang-format on
#else

#ifndef LMP_PAIR_TRANSFORMER_H
#define LMP_PAIR_TRANSFORMER_H

#include "pair.h"

#include "mdplugin_export.h"

#include <torch/script.h>

#include <string>
#include <utility>
#include <vector>

namespace LAMMPS_NS {

class PairTransformer : public Pair {
 public:
  PairTransformer(class LAMMPS *);
  ~PairTransformer() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  // the exchange path's keys and values (forward) and their gradients (reverse), per atom
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  // ---- global attention: the whole system, identical on every rank, sorted by atom ID
  struct System {
    std::vector<double> positions;          // [n*3] Å
    std::vector<int64_t> atomic_numbers;    // [n]
    std::vector<tagint> tags;               // [n] ascending
    double centroid[3];                     // Å; the origin of the virial's lever arms
    std::vector<std::pair<int, int>> owned;    // this rank's atoms: (local index, system index)
  };
  struct Result {
    std::vector<double> forces;             // [n*3] eV/Å
    std::vector<double> per_atom_energy;    // [n] eV
  };

  void compute_global();
  System gather_system();
  void make_molecule_whole(System &);    // periodic box, hybrid/overlay: minimum image, half-box check
  Result evaluate(const System &);
  std::vector<torch::jit::IValue> global_inputs(const System &);
  void scatter_forces(const System &, const Result &);
  void tally_energy_and_virial(const System &, const Result &);

  // ---- local attention: this rank's atoms and its ghosts, with the pairs closer than the range
  struct Neighborhood {
    std::vector<double> positions;          // [n_all*3] Å: mapped local atoms first, then ghosts
    std::vector<int64_t> atomic_numbers;    // [n_all]
    std::vector<int> atom_index;            // [n_all] the LAMMPS index of each model atom
    int64_t n_local = 0;                    // the first n_local atoms are owned by this rank
    std::vector<int64_t> centers, neighbors;    // [E] each ordered pair closer than the range
  };
  struct LocalResult {
    std::vector<double> forces;             // [n_all*3] eV/Å, ghosts included
    std::vector<double> per_atom_energy;    // [n_local] eV
    std::vector<double> edge_gradient;      // [E*3] dE/d(r_j - r_i), eV/Å
  };

  void compute_local();
  Neighborhood collect_neighborhood(bool ghosts_too);
  LocalResult evaluate_local(const Neighborhood &);
  void scatter_local_forces(const Neighborhood &, const LocalResult &);
  void tally_local_energy_and_virial(const Neighborhood &, const LocalResult &);

  // ---- local attention, block by block (export version 3): ghosts out to the interaction range
  // only; between blocks the owners' new keys and values go to their ghosts, and backwards the
  // ghosts' gradients go to their owners (keyword exchange auto|yes|no)
  enum ExchangeMode { EXCHANGE_AUTO, EXCHANGE_YES, EXCHANGE_NO };
  std::string why_not_exchange() const;    // "" when the export has the per-block methods
  void compute_exchange();
  torch::Tensor share_with_ghosts(const Neighborhood &, const torch::Tensor &owned);
  torch::Tensor gather_from_ghosts(const Neighborhood &, const torch::Tensor &shared);
  void rows_to_buffer(const Neighborhood &, const torch::Tensor &rows, int64_t count);
  torch::Tensor buffer_to_rows(const Neighborhood &, int64_t count, const torch::Tensor &like) const;

  // ---- local attention on one rank in a fully periodic box: the owned atoms and the cell
  enum PeriodicMode { PERIODIC_AUTO, PERIODIC_YES, PERIODIC_NO };
  std::string why_not_periodic() const;    // "" when the periodic forward applies
  void compute_periodic();
  void monitor_local_pairs();

  // ---- both: how close atoms come, against the training data's shortest distances
  struct ClosestPair {
    double ratio_squared = INFINITY;    // (distance / the training data's shortest distance)^2
    int element_pair = 0;               // zi * ELEMENT_SLOTS + zj of the pair that gave it
  };
  void consider_pair(ClosestPair &, int64_t zi, int64_t zj, double distance_squared) const;
  void report_domain(ClosestPair);

  // ---- a committee export: the members' force deviation every deviation_every steps
  bool deviation_due() const;
  void report_deviation(std::vector<torch::jit::IValue> inputs, const torch::Tensor &lead_forces = {},
                        double lead_energy = 0.0);
  void deviation_periodic();

  void load_model(const std::string &path);
  void map_types_to_elements(int narg, char **arg);
  void check_masses();
  void check_charge_domain();
  void check_pair_count(double ghost_range);
  bool is_mapped(int type) const;
  bool used_under_hybrid() const;
  void check_box_and_units();
  void allocate();
  std::string model_name() const;
  torch::Dtype input_dtype() const;

  torch::jit::Module model;
  bool model_loaded;
  std::string model_path;
  mdplugin_export::Metadata metadata;    // the export's checked mdplugin.txt

  std::vector<int64_t> type_to_atomic_number;    // [ntypes+1]; 0 = type not handled (NULL)
  // 1 / (shortest training distance)^2 in 1/Å^2 by zi * ELEMENT_SLOTS + zj; 0 = not monitored
  std::vector<double> inverse_shortest_squared;
  torch::Device device;
  std::string dtype_name;    // dtype of the positions handed to the model; "" = model's dtype
  int charge;
  int multiplicity;
  int threads;               // libtorch intra-op threads per rank
  double domain_warn;        // warn when the closest-pair ratio falls below this (0 = never)
  double domain_stop;        // stop when it falls below this (0 = never)
  bool below_warn;           // the ratio was below domain_warn at the previous evaluation
  PeriodicMode periodic_mode;    // keyword periodic: when a local model uses forward(..., cell, pbc)
  bool periodic_forward;         // init_style's choice: the periodic forward applies and is wanted
  ExchangeMode exchange_mode;    // keyword exchange: when a local model runs block by block
  bool exchange_path;            // init_style's choice for the steps the periodic forward does not take
  int exchange_width = 0;        // numbers per atom in each exchange (keys and values: 2 x width)
  int block_count = 0;           // the export's depth
  std::vector<double> exchanged; // [(nlocal + nghost) * exchange_width] by LAMMPS index, for comm
  int deviation_every;           // steps between committee deviations (0 = never)
  double deviation_warn;         // eV/Å: warn when the largest force deviation exceeds it (0 = never)
  double deviation_stop;         // eV/Å: stop when it exceeds this (0 = never)
  std::string deviation_file;    // rank 0 appends step and deviations here ("" = no file)
  bool deviation_file_started;   // its header was written since the last pair_style
  // member 0's forces [n, 3] and energy of the periodic forward, and the step they belong to
  torch::Tensor lead_forces;
  double lead_energy = 0.0;
  bigint lead_step = -1;
};

}    // namespace LAMMPS_NS

#endif
#endif
