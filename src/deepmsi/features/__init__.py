"""Features: the frozen text and audio encoders (:mod:`.text`, :mod:`.audio`), built the same
way for ``prepare`` and ``predict`` (:mod:`.encoders`), the optional text fine-tune
(:mod:`.finetune`) and the cache-building step (:mod:`.preparation`)."""
