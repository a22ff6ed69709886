"""`pedvit demo`: a web page over the distributed predictor (see `pedvit.web.app`)."""
