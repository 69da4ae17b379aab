"""torchvision's input conventions for a detectron2 ResNet model node: RGB, ImageNet mean/std
and the stride in the 3x3 conv, the layout of the backbones ``signsym_det.pretrain_net``
trains (with a rule) and ``signsym_det.convert_pretrained`` converts."""


def torchvision_input(model, dataloader):
    """Set the model node's and the dataloader's input conventions, in place."""
    if "input_format" in model:  # FCOS has none (it only names the channels for display)
        model.input_format = "RGB"
    model.pixel_mean = [123.675, 116.28, 103.53]
    model.pixel_std = [58.395, 57.12, 57.375]
    model.backbone.bottom_up.stages.stride_in_1x1 = False
    dataloader.train.mapper.image_format = "RGB"  # dataloader.test follows it
