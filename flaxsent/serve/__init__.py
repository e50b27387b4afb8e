"""`flaxsent serve`: the card's scoring contract and TEI's API over one batching engine thread."""
