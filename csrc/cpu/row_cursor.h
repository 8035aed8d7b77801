// Walks the pixel rows of one gather source (channels-last gathers): no division per pixel.
#pragma once

#include <cstdint>

#include "../gather_source.h"

namespace autoshuffle_ext::cpu {

// Pixel p = (n, s) = (p / inner, p % inner) of `source` has its channels, consecutive, at
// data + n * batch_stride + s * pixel_stride; the cursor keeps (n, s) by increments.
class RowCursor {
 public:
  RowCursor(const GatherSource& source, int64_t element_size, int64_t inner, int64_t pixel)
      : data_(static_cast<const char*>(source.data)),
        batch_bytes_(source.batch_stride * element_size),
        pixel_bytes_(source.pixel_stride * element_size),
        inner_(inner),
        n_(pixel / inner),
        s_(pixel % inner) {}

  const char* row() const { return data_ + n_ * batch_bytes_ + s_ * pixel_bytes_; }

  void next() {
    if (++s_ == inner_) {
      s_ = 0;
      ++n_;
    }
  }

 private:
  const char* data_;
  int64_t batch_bytes_;
  int64_t pixel_bytes_;
  int64_t inner_;
  int64_t n_;
  int64_t s_;
};

}  // namespace autoshuffle_ext::cpu
