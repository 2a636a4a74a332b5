"""The model repository: the on-disk contract between export and the service, after Triton's layout.

    model_repository/
      resnet50/
        config.json      # modelrepo/schema.py: card, I/O spec, preprocessing, batching, one entry per version
        labels.txt       # one class name per line, index order
        1/model.onnx
        2/model.onnx

One package spells the format out (schema, layout, reading, atomic writing, checksums) and imports neither torch
nor the service, so that export, the service, the load tests and the tests cannot drift apart.
"""
