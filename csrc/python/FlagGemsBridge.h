#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace torch_fl {

// Makes `fn` the FlagGems function of `op_name` ("add.Tensor") for the
// flagos, flaggems and flagos_python routes.
void set_flaggems_function(const std::string& op_name, pybind11::object fn);

// torch_fl._launch_capture.capture: runs a FlagGems function and records
// its launches for the C++ launcher (None: never record).
void set_launch_recorder(pybind11::object fn);

}  // namespace torch_fl
