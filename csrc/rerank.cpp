#include "rerank.h"

#include "errors.h"

namespace lmfast {

namespace {

void replace_all(std::string & s, const std::string & from, const std::string & to) {
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
        s.replace(pos, from.size(), to);
    }
}

}  // namespace

RerankContext::RerankContext(std::shared_ptr<Model> model, const EmbeddingParams & params)
    : ctx_(model, params, /*rank=*/true) {
    if (const char * tmpl = llama_model_chat_template(ctx_.model()->get(), "rerank")) template_ = tmpl;
}

std::vector<llama_token> RerankContext::pair_tokens(const std::string & query, const std::string & document) const {
    const Model & m = *ctx_.model();
    if (!template_.empty()) {
        // As llama-server: the template's own special tokens are parsed; so would be any in the
        // texts, which a template-based reranker reads as plain prompt text anyway.
        std::string prompt = template_;
        replace_all(prompt, "{query}", query);
        replace_all(prompt, "{document}", document);
        return m.tokenize(prompt, /*add_special=*/false, /*parse_special=*/true);
    }
    const llama_vocab * vocab = m.vocab();
    llama_token eos = llama_vocab_eos(vocab);
    if (eos == LLAMA_TOKEN_NULL) eos = llama_vocab_sep(vocab);
    std::vector<llama_token> out;
    if (llama_vocab_get_add_bos(vocab)) out.push_back(llama_vocab_bos(vocab));
    const auto q = m.tokenize(query, false, false);
    out.insert(out.end(), q.begin(), q.end());
    if (llama_vocab_get_add_eos(vocab)) out.push_back(eos);
    if (llama_vocab_get_add_sep(vocab)) out.push_back(llama_vocab_sep(vocab));
    const auto d = m.tokenize(document, false, false);
    out.insert(out.end(), d.begin(), d.end());
    if (llama_vocab_get_add_eos(vocab)) out.push_back(eos);
    return out;
}

RerankScores RerankContext::score(const std::string & query, const std::vector<std::string> & documents) {
    std::vector<std::vector<llama_token>> seqs;
    seqs.reserve(documents.size());
    RerankScores res;
    for (size_t i = 0; i < documents.size(); ++i) {
        seqs.push_back(pair_tokens(query, documents[i]));
        const size_t n = seqs.back().size();
        if (n > static_cast<size_t>(ctx_.n_ctx())) {
            throw InvalidArgument("the query with document " + std::to_string(i) + " is " + std::to_string(n) +
                                  " tokens long, longer than the reranker's context of " +
                                  std::to_string(ctx_.n_ctx()) + " tokens (lmfast does not truncate: shorten it)");
        }
        res.n_tokens += static_cast<int64_t>(n);
    }
    const auto outputs = ctx_.embed_tokens(seqs);
    res.scores.reserve(outputs.size());
    for (const auto & o : outputs) res.scores.push_back(o.empty() ? 0.0f : o[0]);
    return res;
}

}  // namespace lmfast
