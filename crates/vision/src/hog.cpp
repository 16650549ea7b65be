// dlib's HOG frontal face detector behind a small C interface (src/vision/hog.rs).
//
// dlib ships this detector inside its headers as base64 text of a compressed stream;
// dlib::get_frontal_face_detector() decodes and decompresses it on every start, which
// takes 0.3-0.4 s (its entropy decoder). lockerd embeds the same detector serialized
// without compression (frontal_face_detector.dat, made from get_frontal_face_detector()
// by `lockerd_hog_serialize`; a test checks the two are byte for byte the same), which
// deserializes in a few milliseconds.
//
// No C++ exception crosses this interface: every entry point catches and reports.

#include <dlib/image_processing/frontal_face_detector.h>

#include <cstring>
#include <exception>
#include <memory>
#include <sstream>
#include <string>

namespace {
void put_error(const char* what, char* err, size_t err_len) {
    if (err == nullptr || err_len == 0) return;
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = '\0';
}
}  // namespace

extern "C" {

// A detector deserialized from `len` bytes at `data`; nullptr (and a message in `err`)
// when they are not a serialized frontal face detector.
void* lockerd_hog_load(const char* data, size_t len, char* err, size_t err_len) noexcept {
    try {
        std::istringstream in(std::string(data, len));
        auto det = std::make_unique<dlib::frontal_face_detector>();
        dlib::deserialize(*det, in);
        if (det->num_detectors() == 0) {
            put_error("no detector in the data", err, err_len);
            return nullptr;
        }
        return det.release();
    } catch (const std::exception& e) {
        put_error(e.what(), err, err_len);
    } catch (...) {
        put_error("unknown C++ exception", err, err_len);
    }
    return nullptr;
}

// dlib's own detector, built the slow way (for the test that compares the two).
void* lockerd_hog_builtin(char* err, size_t err_len) noexcept {
    try {
        return new dlib::frontal_face_detector(dlib::get_frontal_face_detector());
    } catch (const std::exception& e) {
        put_error(e.what(), err, err_len);
    } catch (...) {
        put_error("unknown C++ exception", err, err_len);
    }
    return nullptr;
}

// Serialize `det` into `out` (capacity `cap`); returns the size needed (the bytes are
// written only when it fits), 0 on error.
size_t lockerd_hog_serialize(const void* det, char* out, size_t cap) noexcept {
    try {
        std::ostringstream o;
        dlib::serialize(*static_cast<const dlib::frontal_face_detector*>(det), o);
        const std::string s = o.str();
        if (s.size() <= cap && out != nullptr) std::memcpy(out, s.data(), s.size());
        return s.size();
    } catch (...) {
        return 0;
    }
}

// Faces in `image` (a dlib::matrix<dlib::rgb_pixel>), as left, top, right, bottom per
// face in `rects` (room for `max` faces). Returns how many were found (possibly more
// than `max`), or -1 on error.
// The detector keeps scratch state: one call at a time (the Rust type is not Sync).
long lockerd_hog_detect(void* det, const void* image, long* rects, size_t max) noexcept {
    try {
        auto& d = *static_cast<dlib::frontal_face_detector*>(det);
        const auto& img = *static_cast<const dlib::matrix<dlib::rgb_pixel>*>(image);
        const std::vector<dlib::rectangle> found = d(img);
        for (size_t i = 0; i < found.size() && i < max; ++i) {
            rects[4 * i] = found[i].left();
            rects[4 * i + 1] = found[i].top();
            rects[4 * i + 2] = found[i].right();
            rects[4 * i + 3] = found[i].bottom();
        }
        return static_cast<long>(found.size());
    } catch (...) {
        return -1;
    }
}

void lockerd_hog_free(void* det) noexcept {
    delete static_cast<dlib::frontal_face_detector*>(det);
}

}  // extern "C"
