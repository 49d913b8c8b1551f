// llama.cpp's and ggml's log output, filtered by lmfast's level (LMFAST_LOG at import,
// lms.set_log_level() after): errors only by default, since llama.cpp reports every load.
#pragma once

#include <string>

namespace lmfast {

// Routes llama.cpp's log through the filter; reads LMFAST_LOG (an unknown value is ignored).
void install_log_filter();

// debug, info, warn (warning), error or none (off); InvalidArgument for anything else.
void set_log_level(const std::string & name);

}  // namespace lmfast
