"""One module (or package) per paper, named by the method's slug; see ``regzoo list``."""
