"""The label values of the phantom's label maps, listed in dataset.json the MSD way.

The order follows the BTCV multi-organ labels where the phantom has the organ (spleen,
kidneys, gallbladder, liver, stomach, aorta, IVC, portal and splenic veins, pancreas),
then the structures it adds. An organ's label holds its lumen and content (stomach,
bowel), its intra-organ vessels (liver) and its lesions (spleen, liver), as organ
segmentations of real CT do. Fat, muscle, skin, the spinal canal, discs, costal
cartilage, small vessels, air and the table are background (0).
"""

BACKGROUND = 0
SPLEEN = 1
RIGHT_KIDNEY = 2
LEFT_KIDNEY = 3
GALLBLADDER = 4
LIVER = 5
STOMACH = 6
AORTA = 7
IVC = 8
PORTAL_VEINS = 9
PANCREAS = 10
DUODENUM = 11
SMALL_BOWEL = 12
COLON = 13
VERTEBRAE = 14
RIBS = 15
LUNGS = 16
HEART = 17

NAMES = {
    BACKGROUND: "background",
    SPLEEN: "spleen",
    RIGHT_KIDNEY: "right kidney",
    LEFT_KIDNEY: "left kidney",
    GALLBLADDER: "gallbladder",
    LIVER: "liver",
    STOMACH: "stomach",
    AORTA: "aorta",
    IVC: "inferior vena cava",
    PORTAL_VEINS: "portal and splenic veins",
    PANCREAS: "pancreas",
    DUODENUM: "duodenum",
    SMALL_BOWEL: "small bowel",
    COLON: "colon",
    VERTEBRAE: "vertebrae",
    RIBS: "ribs",
    LUNGS: "lungs",
    HEART: "heart",
}
