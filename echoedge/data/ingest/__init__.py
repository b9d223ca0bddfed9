"""Bringing a user's own echo data in: plain videos or DICOM cines -> an EchoNet-layout folder.

`cine` holds what crosses between the readers (`videos`, `dicom`) and the writer (`importer`):
decoded frames at the source's size, the frame rate, and where the ultrasound image lies.
"""
