// Makes the compiled library importable as `autoshuffle_ext._C`; importing it runs the static
// TORCH_LIBRARY registrations. Only the Python build compiles this file (no Python in CMake).
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
