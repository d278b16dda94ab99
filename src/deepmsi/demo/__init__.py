"""The offline demo (:mod:`.demo`) and the synthetic corpus it runs on (:mod:`.synthetic`)."""
