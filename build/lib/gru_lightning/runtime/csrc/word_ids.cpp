// Word ids for ASCII texts, the same as the project's `tokenizers` pipeline gives them
// (preprocessing.build_tokenizer): "<br />" -> space, lowercase, every run of characters
// other than [A-Za-z0-9_'] and the kept punctuation marks (e.g. ! ?) is a separator, each
// kept mark is a word of its own; a WordLevel vocabulary with an unknown id; Keras-style
// truncation and padding. NFKC changes no ASCII character, and for ASCII `\w` is
// [A-Za-z0-9_], so the ids are identical; texts with any other byte are flagged and left to
// `tokenizers`. `tokenizers` builds alignment data for every character and an Encoding object
// per text, ~250 us of CPU per IMDB review here; this takes ~7 (one thread, GIL released).
#include <torch/extension.h>

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

inline bool word_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '\'';
}

class WordIds {
 public:
  WordIds(const std::unordered_map<std::string, int64_t>& vocab, int64_t unk_id, int64_t pad_id,
          const std::string& marks)
      : unk_id_(unk_id), pad_id_(pad_id) {
    for (const unsigned char c : marks) mark_[c] = true;
    vocab_.reserve(vocab.size() * 2);
    for (const auto& [word, id] : vocab) vocab_.emplace(word, id);
  }

  // Words of one ASCII text, lowercased, in order; false if the text is not ASCII.
  bool words(std::string_view text, std::vector<std::string>& out) const {
    out.clear();
    std::string word;
    auto flush = [&] {
      if (!word.empty()) {
        out.push_back(word);
        word.clear();
      }
    };
    for (size_t i = 0; i < text.size(); ++i) {
      const unsigned char c = text[i];
      // Not ASCII, or "[" that may open a special token ("[UNK]"), which tokenizers matches
      // in the raw text: left to tokenizers.
      if (c >= 0x80 || c == '[') return false;
      if (c == '<' && text.compare(i, 6, "<br />") == 0) {
        flush();
        i += 5;
      } else if (word_char(c)) {
        word.push_back(c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : char(c));
      } else if (mark_[c]) {
        flush();
        out.emplace_back(1, char(c));
      } else {
        flush();
      }
    }
    flush();
    return true;
  }

  // ids [n, maxlen] (int64) and a flag per text that is not ASCII (its row left as padding).
  std::tuple<at::Tensor, at::Tensor> encode(const std::vector<std::string>& texts, int64_t maxlen,
                                            bool pad_front, bool keep_last) const {
    const int64_t n = static_cast<int64_t>(texts.size());
    auto ids = at::full({n, maxlen}, pad_id_, at::kLong);
    auto skipped = at::zeros({n}, at::kBool);
    int64_t* out = ids.data_ptr<int64_t>();
    bool* flags = skipped.data_ptr<bool>();
    std::vector<std::string> found;
    for (int64_t t = 0; t < n; ++t) {
      if (!words(texts[t], found)) {
        flags[t] = true;
        continue;
      }
      const int64_t count = static_cast<int64_t>(found.size());
      const int64_t kept = std::min(count, maxlen);
      const int64_t first = keep_last ? count - kept : 0;
      int64_t* dest = out + t * maxlen + (pad_front ? maxlen - kept : 0);
      for (int64_t k = 0; k < kept; ++k) {
        const auto hit = vocab_.find(found[first + k]);
        dest[k] = hit == vocab_.end() ? unk_id_ : hit->second;
      }
    }
    return {ids, skipped};
  }

  // How often each word occurs in the ASCII texts, and the indexes of the others.
  std::tuple<std::unordered_map<std::string, int64_t>, std::vector<int64_t>> count(
      const std::vector<std::string>& texts) const {
    std::unordered_map<std::string, int64_t> counts;
    std::vector<int64_t> others;
    std::vector<std::string> found;
    for (size_t t = 0; t < texts.size(); ++t) {
      if (!words(texts[t], found)) {
        others.push_back(static_cast<int64_t>(t));
        continue;
      }
      for (auto& word : found) ++counts[word];
    }
    return {counts, others};
  }

 private:
  std::unordered_map<std::string, int64_t> vocab_;
  int64_t unk_id_, pad_id_;
  bool mark_[256] = {};  // punctuation marks kept as words
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<WordIds>(m, "WordIds")
      .def(pybind11::init<const std::unordered_map<std::string, int64_t>&, int64_t, int64_t,
                          const std::string&>())
      .def("encode", &WordIds::encode, pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("count", &WordIds::count);
}
