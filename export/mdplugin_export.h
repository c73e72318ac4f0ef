// The C++ side of the export contract (export/SPEC.md), shared by the LAMMPS pair style and the
// standalone checker: the metadata names, a parser for mdplugin.txt, and the readable part of a
// TorchScript exception. Header-only, so a LAMMPS source tree needs just this file beside the style.
#ifndef MDPLUGIN_EXPORT_H
#define MDPLUGIN_EXPORT_H

#include <cstring>
#include <exception>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace mdplugin_export {

inline const char *const FORMAT_NAME = "mdplugin-export";
inline const char *const SUPPORTED_FORMAT_VERSION = "1";
inline const char *const METADATA_FILE = "mdplugin.txt";    // flat key=value lines

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

}    // namespace mdplugin_export

#endif
