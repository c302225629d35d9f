"""The standard TFLite Metadata (the `TFLITE_METADATA` buffer Android Studio's ML model binding
and the TFLite Support task library read), written and read with the published schema.

metadata_schema.fbs            the schema (tflite-support 0.4.4, Apache-2.0)
metadata_schema_generated.py   flatc-generated Python for it (imports flatbuffers only)
writer.py                      build the metadata from an edgekit manifest; pack associated files
"""
