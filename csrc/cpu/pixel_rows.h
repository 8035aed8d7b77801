// Pixel rows read where they lie: the channels-last gathers' view of an input.
#pragma once

#include <cstdint>

namespace autoshuffle_ext::cpu {

// The pixel rows of one input, strides in elements: pixel p = (n, s) = (p / inner, p % inner)
// has its `channels` channels, consecutive, at data + n * batch_stride + s * pixel_stride.
struct PixelRows {
  const void* data;
  int64_t channels;
  int64_t batch_stride;
  int64_t pixel_stride;
};

// Walks the pixel rows of one input from a given pixel, keeping (n, s) by increments: no
// division per pixel.
class RowCursor {
 public:
  RowCursor(const PixelRows& rows, int64_t element_size, int64_t inner, int64_t pixel)
      : data_(static_cast<const char*>(rows.data)),
        batch_bytes_(rows.batch_stride * element_size),
        pixel_bytes_(rows.pixel_stride * element_size),
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
