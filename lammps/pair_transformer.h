/* -*- c++ -*- ----------------------------------------------------------
   pair_style transformer: a graph-free Transformer interatomic potential (mdplugin export)
   evaluated through libtorch.

   The model attends globally: every atom interacts with every atom, with no cutoff. Each
   evaluation therefore gathers the whole system (all MPI ranks' atoms, ordered by atom ID),
   evaluates it, and keeps the forces and energies of the locally owned atoms.
------------------------------------------------------------------------- */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(transformer,PairTransformer);
// clang-format on
#else

#ifndef LMP_PAIR_TRANSFORMER_H
#define LMP_PAIR_TRANSFORMER_H

#include "pair.h"

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

 protected:
  // The whole system as the model sees it, identical on every rank: sorted by atom ID.
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

  System gather_system();
  Result evaluate(const System &);
  void scatter_forces(const System &, const Result &);
  void tally_energy_and_virial(const System &, const Result &);

  void load_model(const std::string &path);
  void map_types_to_elements(int narg, char **arg);
  bool is_mapped(int type) const;
  bool used_under_hybrid() const;
  void check_box_and_units();
  void allocate();

  torch::jit::Module model;
  bool model_loaded;
  std::string model_path;
  std::vector<std::string> model_elements;    // symbols, in the model's order
  std::vector<int64_t> model_atomic_numbers;  // same order
  std::string model_dtype;                    // float32 | float64, from the export's metadata
  std::string interaction_range;              // "none" for global attention

  std::vector<int64_t> type_to_atomic_number;    // [ntypes+1]; 0 = type not handled (NULL)
  torch::Device device;
  std::string dtype_name;    // dtype of the positions handed to the model; "" = model's dtype
  int charge;
  int multiplicity;
  double cutoff;    // nominal only: the model ignores the neighbor list
};

}    // namespace LAMMPS_NS

#endif
#endif
