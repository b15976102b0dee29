/* model_config.h — gz_config <-> Python dict (keys: gozaru.config.CORE_FIELDS). */
#ifndef GOZARU_PY_MODEL_CONFIG_H
#define GOZARU_PY_MODEL_CONFIG_H

#include "pycore.h"

/* Fills cfg from a dict holding exactly the core keys, then gz_config_validate; -1 with an
 * exception (TypeError for wrong types, ValueError for missing/unknown keys and bad values). */
int gzpy_config_from_dict(PyObject *d, gz_config *cfg);
PyObject *gzpy_config_to_dict(const gz_config *cfg);
PyObject *gzpy_tensor_table(PyObject *module, PyObject *config);

#endif
